"""The one Parquet schema every job writes and every later step reads.

One row per (model, fold model, image): `split` is "oof" for a fold's validation
images (target set) or "test" for eval images (target null). Logits are always 18
float32 values, whatever the head, so any two models can be blended.

The file metadata carries the rows hash (tasks.data.preparation.rows_hash): logits of different
models are comparable only when they carry the same one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.atomic import atomic_path
from tasks.errors import UserError
from tasks.labels import NUM_CLASSES

SPLITS = ("oof", "test")

LOGITS_SCHEMA = pa.schema(
    [
        pa.field("experiment", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),  # the model's name in the spec
        pa.field("fold", pa.int16(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("image_key", pa.string(), nullable=False),
        pa.field("person", pa.string(), nullable=True),  # null for eval images
        pa.field("target", pa.int8(), nullable=True),  # null for eval images
        pa.field("logits", pa.list_(pa.float32(), NUM_CLASSES), nullable=False),
    ]
)
# Files written before the names were settled: the model's name was in a column "backbone"
# and the rows hash under the key "spec_hash". They are read as if written today.
LEGACY_COLUMNS = {"backbone": "model"}
LEGACY_KEYS = {b"spec_hash": b"rows_hash"}


def gathered_name(split: str, repeat: int = 0) -> str:
    """An experiment's gathered file of a split and repeat (folds.repeats): repeat 0's is
    oof.parquet / test.parquet, as ever; repeat r's oof_r<r>.parquet, in its own folds."""
    return f"{split}.parquet" if repeat == 0 else f"{split}_r{repeat}.parquet"


class LogitsError(UserError, ValueError):
    """A logits file that does not follow LOGITS_SCHEMA or its metadata."""


@dataclass(frozen=True)
class LogitsMeta:
    rows_hash: str  # what makes rows comparable across models (data, folds, labels)
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
    return table.replace_schema_metadata({"rows_hash": meta.rows_hash, "num_classes": str(meta.num_classes)})


def write_logits(path: str | os.PathLike, table: pa.Table) -> None:
    validate_table(table, str(path))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def upgrade(table: pa.Table) -> pa.Table:
    """A table as written today, from one that may use the legacy names."""
    names = [LEGACY_COLUMNS.get(n, n) if LEGACY_COLUMNS.get(n) not in table.schema.names else n
             for n in table.schema.names]
    meta = dict(table.schema.metadata or {})
    for old, new in LEGACY_KEYS.items():
        if old in meta and new not in meta:
            meta[new] = meta.pop(old)
    return table.rename_columns(names).replace_schema_metadata(meta)


def explain_schema(schema: pa.Schema) -> str | None:
    """What differs from LOGITS_SCHEMA, in a line, or None."""
    if "logits" in schema.names:
        size = getattr(schema.field("logits").type, "list_size", NUM_CLASSES)
        if size != NUM_CLASSES:
            return (f"logits have {size} classes per row, expected {NUM_CLASSES} (mask x gender x age); "
                    "was the model built with another head?")
    missing = [n for n in LOGITS_SCHEMA.names if n not in schema.names]
    extra = [n for n in schema.names if n not in LOGITS_SCHEMA.names]
    typed = [f"{n} is {schema.field(n).type}, expected {LOGITS_SCHEMA.field(n).type}"
             for n in LOGITS_SCHEMA.names if n in schema.names and schema.field(n).type != LOGITS_SCHEMA.field(n).type]
    problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
        [f"unexpected {', '.join(extra)}"] if extra else []) + typed
    return f"schema differs from LOGITS_SCHEMA: {'; '.join(problems)}" if problems else None


def validate_table(table: pa.Table, where: str) -> LogitsMeta:
    if not table.schema.equals(LOGITS_SCHEMA, check_metadata=False):
        raise LogitsError(f"{where}: {explain_schema(table.schema) or 'schema differs from LOGITS_SCHEMA'}")
    meta = table.schema.metadata or {}
    if b"rows_hash" not in meta or b"num_classes" not in meta:
        raise LogitsError(f"{where}: missing rows_hash/num_classes file metadata; run the experiment again "
                          "(`python -m orchestrator.run`) to gather its jobs anew")
    num_classes = int(meta[b"num_classes"])
    if num_classes != NUM_CLASSES:
        raise LogitsError(f"{where}: {num_classes} classes, expected {NUM_CLASSES}")
    bad = set(table.column("split").unique().to_pylist()) - set(SPLITS)
    if bad:
        raise LogitsError(f"{where}: unknown split values {sorted(bad)}")
    return LogitsMeta(rows_hash=meta[b"rows_hash"].decode(), num_classes=num_classes)


def check_logits_file(path: str | os.PathLike) -> int:
    """Rows of a logits file, after checking its footer and schema without reading its data."""
    file = pq.ParquetFile(path)
    validate_table(upgrade(file.schema_arrow.empty_table()), str(path))
    return file.metadata.num_rows


def read_logits(path: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray, LogitsMeta]:
    """Key columns as a DataFrame, logits as an (N, 18) float32 array, and the metadata."""
    table = upgrade(pq.read_table(path))
    meta = validate_table(table, str(path))
    logits = table.column("logits").combine_chunks().flatten().to_numpy().reshape(-1, meta.num_classes)
    frame = table.drop_columns(["logits"]).to_pandas(
        types_mapper=lambda t: pd.Int8Dtype() if t == pa.int8() else None
    )
    return frame, logits, meta
