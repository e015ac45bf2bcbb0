"""Photos two people share: byte-identical files found by the sha256 the cache recorded.

A copy of a person's folder under another id (or one photo filed under two people) puts the
same photo in two folds, so validation scores photos the model trained on. data.on_duplicate
says what to do: stop (the default), keep (people sharing photos share a fold), or drop
(leave out the later copy of each shared photo, and still keep those people in one fold).
Copies inside one person's folder never straddle folds and are only mentioned.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tasks.data.cache import ImageCache
from tasks.data.dataset import DataError, Problem, describe

OnDuplicate = Literal["stop", "keep", "drop"]
COPY_COLUMNS = ["image_key", "path", "original_key", "original_path"]


@dataclass(frozen=True)
class Duplicates:
    across: pd.DataFrame  # COPY_COLUMNS: every later copy (by image_key) of a photo two people have
    within: pd.DataFrame  # COPY_COLUMNS: later copies of a photo only one person has
    linked: tuple[tuple[str, ...], ...]  # people sharing photos, directly or through others

    def stop_message(self) -> str:
        return (f"{len(self.across)} training image(s) are byte-identical to a photo of another person; "
                "a copy held out in another fold than its original makes validation score photos seen "
                f"in training:\n{describe(_as_problems(self.across))}\n"
                "Remove the copies, or run with --set data.on_duplicate=keep (people sharing photos share "
                "a fold) or --set data.on_duplicate=drop (also leave out the later copies).")


@dataclass(frozen=True)
class Settled:
    images: pd.DataFrame  # the training rows to use
    linked: tuple[tuple[str, ...], ...]  # people to keep in one fold
    identity: dict  # enters the data hash; empty when no photo is shared, so hashes stay as before
    note: str  # what was done, for the log ("" if nothing to say)


def _as_problems(copies: pd.DataFrame) -> list[Problem]:
    return [Problem(row.path, f"same bytes as {row.original_path}") for row in copies.itertuples()]


def find_duplicates(images: pd.DataFrame, cache: ImageCache) -> Duplicates:
    """Copies among the decodable images; the first by image_key counts as the original."""
    rows = cache.rows(images["image_key"])
    sha = np.asarray(cache.sha256, dtype=object)[rows] if cache.sha256 else np.full(len(rows), "", object)
    frame = images[["image_key", "person", "path"]].assign(sha256=sha)[cache.ok[rows] & (sha != "")]
    frame = frame.sort_values("image_key")
    by_hash = frame.groupby("sha256")
    frame = frame.assign(original_key=by_hash.image_key.transform("first"),
                         original_path=by_hash.path.transform("first"),
                         shared=by_hash.person.transform("nunique") > 1)
    later = frame[frame.image_key != frame.original_key]
    return Duplicates(later.loc[later.shared, COPY_COLUMNS].reset_index(drop=True),
                      later.loc[~later.shared, COPY_COLUMNS].reset_index(drop=True),
                      _linked_people(frame[frame.shared]))


def _linked_people(shared: pd.DataFrame) -> tuple[tuple[str, ...], ...]:
    """Connected components of the people graph whose edges are shared photos."""
    people, codes = np.unique(shared.person.to_numpy(dtype=str), return_inverse=True)
    if not len(people):
        return ()
    first = pd.Series(codes).groupby(shared.sha256.to_numpy()).transform("first").to_numpy()
    graph = coo_matrix((np.ones(len(codes)), (codes, first)), shape=(len(people), len(people)))
    _, label = connected_components(graph, directed=False)
    groups = pd.Series(people).groupby(label).agg(tuple)
    return tuple(sorted(g for g in groups if len(g) > 1))


def settle_duplicates(images: pd.DataFrame, dups: Duplicates, how: OnDuplicate) -> Settled:
    """Apply data.on_duplicate to the training rows; DataError for `stop` when people share photos."""
    note = ""
    if len(dups.within):
        note = (f"note: {len(dups.within)} image(s) repeat another photo of the same person (harmless: one "
                f"person is never split over folds):\n{describe(_as_problems(dups.within), limit=5)}")
    if not len(dups.across):
        return Settled(images, (), {}, note)
    if how == "stop":
        raise DataError(dups.stop_message())
    dropped = sorted(dups.across.image_key) if how == "drop" else []
    kept = images[~images["image_key"].isin(dropped)].reset_index(drop=True)
    people = sum(len(g) for g in dups.linked)
    what = (f"left out {len(dropped)} later copies of photos another person has" if dropped else
            f"kept {len(dups.across)} image(s) that copy a photo of another person")
    note = "\n".join(filter(None, [note, f"data.on_duplicate={how}: {what}; the {people} people sharing "
                                         f"photos form {len(dups.linked)} group(s), each held out in one fold"]))
    return Settled(kept, dups.linked, {"linked": [list(g) for g in dups.linked], "dropped": dropped}, note)
