"""Checks of a gathered logits file's key columns: each one a ResultsError naming the file and
what makes its rows unusable (duplicates, folds out of range, targets, people held out twice)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.analysis.results_folder import ResultsError
from tasks.labels import MASK_STEMS, NUM_CLASSES


def check_unique(frame: pd.DataFrame, columns: list[str], path: Path) -> None:
    dup = frame.duplicated(columns)
    if dup.any():
        first = frame.loc[dup, columns].iloc[0].to_dict()
        raise ResultsError(f"{path}: {dup.sum()} duplicate rows per ({', '.join(columns)}), e.g. {first}; "
                           f"the gather step wrote some job twice")


def check_folds(frame: pd.DataFrame, path: Path, n_splits: int) -> None:
    bad = (frame.fold < 0) | (frame.fold >= n_splits)
    if bad.any():
        raise ResultsError(f"{path}: fold {frame.fold[bad].iloc[0]} outside 0..{n_splits - 1} "
                           f"(folds.n_splits in spec.yaml is {n_splits})")


def check_oof_keys(frame: pd.DataFrame, path: Path, n_splits: int) -> None:
    for column in ("person", "target"):
        if frame[column].isna().any():
            raise ResultsError(f"{path}: {frame[column].isna().sum()} OOF rows have no {column}")
    target = frame.target.astype(np.int64)
    if ((target < 0) | (target >= NUM_CLASSES)).any():
        raise ResultsError(f"{path}: targets outside 0..{NUM_CLASSES - 1}")
    check_unique(frame, ["model", "image_key"], path)
    check_folds(frame, path, n_splits)
    labels = frame.drop_duplicates(["image_key", "target", "fold", "person"])
    if labels.image_key.duplicated().any():
        key = labels.image_key[labels.image_key.duplicated()].iloc[0]
        raise ResultsError(f"{path}: models disagree on the target, fold or person of {key} "
                           f"(and maybe more); their OOF rows come from different labels or folds")
    parts = labels.image_key.str.rpartition("/")  # one row per image from here: cheaper
    bad = (parts[0] != labels.person) | ~parts[2].isin(MASK_STEMS)
    if bad.any():
        raise ResultsError(f"{path}: image_key {labels.image_key[bad].iloc[0]!r} is not "
                           f"'<person>/<one of {', '.join(MASK_STEMS)}>'")
    split_people = labels.groupby("person").fold.nunique()
    if (split_people > 1).any():
        raise ResultsError(f"{path}: person {split_people[split_people > 1].index[0]} is held out in "
                           f"several folds; folds must split by person or OOF scores flatter")
