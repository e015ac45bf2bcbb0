"""The one Parquet schema every job writes and every later step reads.

One row per (model, fold model, image): `split` is "oof" for a fold's validation
images (target set) or "test" for eval images (target null). Logits are always 18
float32 values, whatever the head, so any two models can be blended.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.atomic import atomic_path
from tasks.labels import NUM_CLASSES

SPLITS = ("oof", "test")

LOGITS_SCHEMA = pa.schema(
    [
        pa.field("experiment", pa.string(), nullable=False),
        pa.field("backbone", pa.string(), nullable=False),  # the model's name in the spec
        pa.field("fold", pa.int16(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("image_key", pa.string(), nullable=False),
        pa.field("person", pa.string(), nullable=True),  # null for eval images
        pa.field("target", pa.int8(), nullable=True),  # null for eval images
        pa.field("logits", pa.list_(pa.float32(), NUM_CLASSES), nullable=False),
    ]
)


class LogitsError(ValueError):
    """A logits file that does not follow LOGITS_SCHEMA or its metadata."""


@dataclass(frozen=True)
class LogitsMeta:
    spec_hash: str  # hash of what makes rows comparable across models (data, folds, labels)
    num_classes: int = NUM_CLASSES


def logits_table(frame: pd.DataFrame, logits: np.ndarray, meta: LogitsMeta) -> pa.Table:
    """Build a validated table from the key columns in `frame` and an (N, 18) array."""
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    if logits.shape != (len(frame), meta.num_classes):
        raise LogitsError(f"logits shape {logits.shape} != ({len(frame)}, {meta.num_classes})")
    columns = {name: frame[name] for name in LOGITS_SCHEMA.names if name != "logits"}
    table = pa.Table.from_pydict(
        {
            **{k: pa.array(v, type=LOGITS_SCHEMA.field(k).type, from_pandas=True) for k, v in columns.items()},
            "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1)), meta.num_classes),
        },
        schema=LOGITS_SCHEMA,
    )
    return table.replace_schema_metadata(
        {"spec_hash": meta.spec_hash, "num_classes": str(meta.num_classes)}
    )


def write_logits(path: str | os.PathLike, table: pa.Table) -> None:
    validate_table(table, str(path))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def validate_table(table: pa.Table, where: str) -> LogitsMeta:
    if not table.schema.equals(LOGITS_SCHEMA, check_metadata=False):
        raise LogitsError(f"{where}: schema differs from LOGITS_SCHEMA:\n{table.schema}")
    meta = table.schema.metadata or {}
    if b"spec_hash" not in meta or b"num_classes" not in meta:
        raise LogitsError(f"{where}: missing spec_hash/num_classes file metadata")
    num_classes = int(meta[b"num_classes"])
    if num_classes != NUM_CLASSES:
        raise LogitsError(f"{where}: {num_classes} classes, expected {NUM_CLASSES}")
    bad = set(table.column("split").unique().to_pylist()) - set(SPLITS)
    if bad:
        raise LogitsError(f"{where}: unknown split values {sorted(bad)}")
    return LogitsMeta(spec_hash=meta[b"spec_hash"].decode(), num_classes=num_classes)


def read_logits(path: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray, LogitsMeta]:
    """Key columns as a DataFrame, logits as an (N, 18) float32 array, and the metadata."""
    table = pq.read_table(path)
    meta = validate_table(table, str(path))
    logits = table.column("logits").combine_chunks().flatten().to_numpy().reshape(-1, meta.num_classes)
    frame = table.drop_columns(["logits"]).to_pandas(
        types_mapper=lambda t: pd.Int8Dtype() if t == pa.int8() else None
    )
    return frame, logits, meta
