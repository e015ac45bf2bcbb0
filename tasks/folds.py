"""Person-level stratified folds: people are split, never images.

Stratified on gender x age band so every fold sees the rare >=60 classes in proportion.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.model_selection import StratifiedKFold

from tasks.atomic import atomic_path
from tasks.labels import age_band

FOLDS_SCHEMA = pa.schema([("image_key", pa.string()), ("person", pa.string()),
                          ("stratum", pa.int8()), ("fold", pa.int16())])


def make_folds(images: pd.DataFrame, n_splits: int, seed: int) -> pd.DataFrame:
    """One row per image with the fold its person is held out in."""
    people = images.drop_duplicates("person")[["person", "gender", "age"]].sort_values("person")
    stratum = (people["gender"].to_numpy() * 3 + age_band(people["age"].to_numpy())).astype(np.int8)
    if len(people) < n_splits:
        raise ValueError(f"folds.n_splits={n_splits} but only {len(people)} people in the data")
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fold = np.empty(len(people), dtype=np.int16)
    with warnings.catch_warnings():
        # Tiny data sets have strata with fewer people than folds; sklearn then only warns.
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(people)), stratum)):
            fold[held_out] = k
    by_person = pd.DataFrame({"person": people["person"].to_numpy(), "stratum": stratum, "fold": fold})
    return images[["image_key", "person"]].merge(by_person, on="person", how="left", validate="many_to_one")


def save_folds(path: Path, folds: pd.DataFrame, meta: dict[str, str]) -> None:
    table = pa.Table.from_pandas(folds[FOLDS_SCHEMA.names], schema=FOLDS_SCHEMA, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def load_folds(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    table = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    return table.to_pandas(), meta
