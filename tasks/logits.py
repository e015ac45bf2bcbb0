"""The one Parquet schema every job writes and every later step reads.

One row per (model, fold model, image): `split` is "oof" for a fold's validation
images (target set) or "test" for eval images (target null). `target` is always the
18-class label as given, whatever the model predicts, so that rows of any two models align.

Logits: 18 float32 values for a model of all classes (LOGITS_SCHEMA), whatever the head, so any
two of them can be blended. A specialist (`train.target: mask|gender|age`) predicts its
attribute alone: its files have the same columns with 3, 2 or 3 logits per row
(`logits_schema(width)`) and declare it in their metadata (`target`, `num_classes`); a file
holds one width. An experiment gathers its all-class models into oof.parquet / test.parquet as
ever, each attribute's specialists into oof_<attribute>.parquet (`gathered_name`).

The file metadata carries the rows hash (tasks.data.preparation.rows_hash): logits of different
models are comparable only when they carry the same one. Files without a `target` key (every
file written before specialists) are all-class files.
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
from tasks.labels import ALL, ATTRIBUTES, NUM_CLASSES, target_width

SPLITS = ("oof", "test")
TARGETS = (ALL, *ATTRIBUTES)


def logits_schema(width: int = NUM_CLASSES) -> pa.Schema:
    """The columns of a logits file with `width` logits per row (18, or a specialist's 3/2/3)."""
    return pa.schema(
        [
            pa.field("experiment", pa.string(), nullable=False),
            pa.field("model", pa.string(), nullable=False),  # the model's name in the spec
            pa.field("fold", pa.int16(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("image_key", pa.string(), nullable=False),
            pa.field("person", pa.string(), nullable=True),  # null for eval images
            pa.field("target", pa.int8(), nullable=True),  # the 18-class given label; null for eval images
            pa.field("logits", pa.list_(pa.float32(), width), nullable=False),
        ]
    )


LOGITS_SCHEMA = logits_schema(NUM_CLASSES)
# Files written before the names were settled: the model's name was in a column "backbone"
# and the rows hash under the key "spec_hash". They are read as if written today.
LEGACY_COLUMNS = {"backbone": "model"}
LEGACY_KEYS = {b"spec_hash": b"rows_hash"}


REFIT_FILE = "test_refit.parquet"  # the refit models' test logits (tasks/spec/refit.py), fold -1


def gathered_name(split: str, repeat: int = 0, target: str = ALL) -> str:
    """An experiment's gathered file of a split, repeat (folds.repeats) and target: repeat 0's
    all-class file is oof.parquet / test.parquet, as ever; repeat r's oof_r<r>.parquet, in its
    own folds; an attribute's specialists' oof_<attribute>.parquet (oof_age_r1.parquet)."""
    return f"{split}{'' if target == ALL else '_' + target}{'' if repeat == 0 else f'_r{repeat}'}.parquet"


class LogitsError(UserError, ValueError):
    """A logits file that does not follow LOGITS_SCHEMA or its metadata."""


@dataclass(frozen=True)
class LogitsMeta:
    rows_hash: str  # what makes rows comparable across models (data, folds, labels)
    num_classes: int = NUM_CLASSES
    target: str = ALL  # what the logits predict: the 18 classes, or a specialist's attribute

    @classmethod
    def of_target(cls, rows_hash: str, target: str) -> LogitsMeta:
        return cls(rows_hash, target_width(target), target)

    def footer(self) -> dict[str, str]:
        """The file metadata; an all-class file's is what it always was (no `target` key)."""
        return {"rows_hash": self.rows_hash, "num_classes": str(self.num_classes),
                **({"target": self.target} if self.target != ALL else {})}


def logits_table(frame: pd.DataFrame, logits: np.ndarray, meta: LogitsMeta) -> pa.Table:
    """Build a validated table from the key columns in `frame` and an (N, width) array."""
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    if meta.num_classes != target_width(meta.target):
        raise LogitsError(f"{meta.num_classes} classes do not fit target {meta.target!r} "
                          f"({target_width(meta.target)} classes)")
    if logits.shape != (len(frame), meta.num_classes):
        raise LogitsError(f"logits shape {logits.shape} != ({len(frame)}, {meta.num_classes})")
    schema = logits_schema(meta.num_classes)
    columns = {name: frame[name] for name in schema.names if name != "logits"}
    table = pa.Table.from_pydict(
        {
            **{k: pa.array(v, type=schema.field(k).type, from_pandas=True) for k, v in columns.items()},
            "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1)), meta.num_classes),
        },
        schema=schema,
    )
    return table.replace_schema_metadata(meta.footer())


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


def explain_schema(schema: pa.Schema, width: int = NUM_CLASSES, target: str = ALL) -> str | None:
    """What differs from the schema of `width` logits per row (logits_schema), in a line, or None."""
    expected = logits_schema(width)
    if "logits" in schema.names:
        size = getattr(schema.field("logits").type, "list_size", width)
        if size != width:
            what = "mask x gender x age" if target == ALL else f"a {target} specialist's, as its metadata's target says"
            return (f"logits have {size} classes per row, expected {width} ({what}); "
                    "was the model built with another head?")
    missing = [n for n in expected.names if n not in schema.names]
    extra = [n for n in schema.names if n not in expected.names]
    typed = [f"{n} is {schema.field(n).type}, expected {expected.field(n).type}"
             for n in expected.names if n in schema.names and schema.field(n).type != expected.field(n).type]
    problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
        [f"unexpected {', '.join(extra)}"] if extra else []) + typed
    return f"schema differs from LOGITS_SCHEMA: {'; '.join(problems)}" if problems else None


def validate_table(table: pa.Table, where: str) -> LogitsMeta:
    """The file's metadata, once its schema is the one its target declares (no key: all classes)."""
    meta = table.schema.metadata or {}
    target = meta.get(b"target", ALL.encode()).decode()
    if target not in TARGETS:
        raise LogitsError(f"{where}: target {target!r} in the file metadata is none of {', '.join(TARGETS)}")
    width = target_width(target)
    if not table.schema.equals(logits_schema(width), check_metadata=False):
        raise LogitsError(f"{where}: {explain_schema(table.schema, width, target) or 'schema differs from LOGITS_SCHEMA'}")
    if b"rows_hash" not in meta or b"num_classes" not in meta:
        raise LogitsError(f"{where}: missing rows_hash/num_classes file metadata; run the experiment again "
                          "(`python -m orchestrator.run`) to gather its jobs anew")
    num_classes = int(meta[b"num_classes"])
    if num_classes != width:
        raise LogitsError(f"{where}: {num_classes} classes, expected {width}"
                          + ("" if target == ALL else f" (target {target})"))
    bad = set(table.column("split").unique().to_pylist()) - set(SPLITS)
    if bad:
        raise LogitsError(f"{where}: unknown split values {sorted(bad)}")
    return LogitsMeta(rows_hash=meta[b"rows_hash"].decode(), num_classes=num_classes, target=target)


def check_logits_file(path: str | os.PathLike) -> int:
    """Rows of a logits file, after checking its footer and schema without reading its data."""
    file = pq.ParquetFile(path)
    validate_table(upgrade(file.schema_arrow.empty_table()), str(path))
    return file.metadata.num_rows


def read_logits(path: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray, LogitsMeta]:
    """Key columns as a DataFrame, logits as an (N, width) float32 array (18, or a specialist's
    attribute's: see the metadata's `target`), and the metadata."""
    table = upgrade(pq.read_table(path))
    meta = validate_table(table, str(path))
    logits = table.column("logits").combine_chunks().flatten().to_numpy().reshape(-1, meta.num_classes)
    frame = table.drop_columns(["logits"]).to_pandas(
        types_mapper=lambda t: pd.Int8Dtype() if t == pa.int8() else None
    )
    return frame, logits, meta
