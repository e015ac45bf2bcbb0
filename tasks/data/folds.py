"""Person-level stratified folds: people are split, never images.

Stratified on gender x age band so every fold sees the rare >=60 classes in proportion.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.model_selection import StratifiedKFold

from tasks.atomic import atomic_path
from tasks.data.dataset import DataError
from tasks.labels import AGE_NAMES, GENDER_NAMES, age_band

FOLDS_SCHEMA = pa.schema([("image_key", pa.string()), ("person", pa.string()),
                          ("stratum", pa.int8()), ("fold", pa.int16())])


def make_folds(images: pd.DataFrame, n_splits: int, seed: int,
               linked: Sequence[Sequence[str]] = (), warn: bool = True) -> pd.DataFrame:
    """One row per image with the fold its person is held out in.

    People in one `linked` group (they share photos) are held out together: the split runs
    over groups, one row per group with its first person's stratum. A person in no group is
    a group alone, so without links the split is exactly the per-person one.
    """
    people = images.drop_duplicates("person")[["person", "gender", "age"]].sort_values("person")
    people["stratum"] = (people["gender"].to_numpy() * 3 + age_band(people["age"].to_numpy())).astype(np.int8)
    group_of = {person: f"linked {i}" for i, group in enumerate(linked) for person in group}
    people["group"] = people.groupby(people["person"].map(lambda p: group_of.get(p, p)), sort=False)[
        "person"].transform("first")
    groups = people[people["person"] == people["group"]]  # sorted by person, as the per-person split was
    stratum = groups["stratum"].to_numpy()
    check_fold_sizes(stratum, n_splits)
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fold = np.empty(len(groups), dtype=np.int16)
    with warnings.catch_warnings():
        # sklearn's warning names no band; warn_small_strata says which and what it costs.
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(groups)), stratum)):
            fold[held_out] = k
    if warn:
        warn_small_strata(stratum, fold, n_splits)
    people["fold"] = people["group"].map(dict(zip(groups["person"], fold))).astype(np.int16)
    by_person = people[["person", "stratum", "fold"]]
    return images[["image_key", "person"]].merge(by_person, on="person", how="left", validate="many_to_one")


def fold_column(repeat: int) -> str:
    """The folds.parquet column of a repeat's folds: repeat 0 is `fold`, as it always was."""
    return "fold" if repeat == 0 else f"fold_r{repeat}"


def make_repeated_folds(images: pd.DataFrame, n_splits: int, seed: int, repeats: int,
                        linked: Sequence[Sequence[str]] = ()) -> pd.DataFrame:
    """`make_folds` with one more column per repeat r > 0 (`fold_r<r>`, split with seed + r)."""
    folds = make_folds(images, n_splits, seed, linked)
    for r in range(1, repeats):
        again = make_folds(images, n_splits, seed + r, linked, warn=False)  # same bands: said once
        folds[fold_column(r)] = again["fold"].to_numpy()
    return folds


def stratum_name(stratum: int) -> str:
    return f"{GENDER_NAMES[stratum // 3]} {AGE_NAMES[stratum % 3]}"


def check_fold_sizes(stratum: np.ndarray, n_splits: int) -> None:
    """DataError where sklearn would raise: fewer people than folds, or every band smaller."""
    bands, counts = np.unique(stratum, return_counts=True)
    listing = ", ".join(f"{stratum_name(b)}: {n}" for b, n in zip(bands, counts))
    if len(stratum) < n_splits:
        raise DataError(f"folds.n_splits={n_splits} but the data has only {len(stratum)} people; "
                        f"use fewer folds (--set folds.n_splits={len(stratum)}) or more people")
    if (counts < n_splits).all():
        fix = (f"lower folds.n_splits to at most {counts.max()} (--set folds.n_splits={counts.max()})"
               if counts.max() >= 2 else "add people: no band has two")
        raise DataError(f"folds.n_splits={n_splits} is more than the people in every gender x age band "
                        f"({listing}); stratified folds need a band with at least n_splits people: {fix}")


def warn_small_strata(stratum: np.ndarray, fold: np.ndarray, n_splits: int) -> None:
    """Name each band with fewer people than folds: some folds validate none of its classes."""
    lines = []
    for band in np.unique(stratum):
        empty = n_splits - len(np.unique(fold[stratum == band]))
        if empty:
            count = (stratum == band).sum()
            lines.append(f"  {stratum_name(band)}: {count} {'person' if count == 1 else 'people'}, "
                         f"so {empty} of {n_splits} folds validate none of them")
    if lines:
        print(f"warning: folds.n_splits={n_splits} is more than the people in some gender x age bands; "
              "those folds' scores miss the band's classes:\n" + "\n".join(lines), file=sys.stderr)


def save_folds(path: Path, folds: pd.DataFrame, meta: dict[str, str]) -> None:
    repeats = [c for c in folds.columns if c.startswith("fold_r")]
    schema = pa.schema([*FOLDS_SCHEMA, *(pa.field(c, pa.int16()) for c in repeats)])
    table = pa.Table.from_pandas(folds[schema.names], schema=schema, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def load_folds(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    table = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    return table.to_pandas(), meta
