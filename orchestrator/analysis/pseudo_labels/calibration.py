"""Per-class pseudo-label thresholds from round 1's OOF rows (`pseudo.per_class`).

A blend's probabilities for a rare class stay low (its prior is small) even where its label is
right: one global threshold keeps only the common classes. Per class, the threshold here is the
lowest blended probability at which round 1's OOF rows given that label were right at least
`precision` of the time: the same expected label quality for every class, so the rare classes
get rows wherever the blend is reliable for them, and none where it is not.
"""
from __future__ import annotations

import numpy as np

from tasks.labels import NUM_CLASSES


def class_thresholds(labels: np.ndarray, probs: np.ndarray, target: np.ndarray, precision: float,
                     min_rows: int) -> np.ndarray:
    """(18,) per class the lowest confidence whose rows at or above it were right `precision`
    of the time, over at least `min_rows` rows; inf for a class that never is."""
    confidence = probs[np.arange(len(labels)), labels]
    out = np.full(NUM_CLASSES, np.inf)
    for c in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == c)
        order = rows[np.argsort(-confidence[rows], kind="stable")]
        right = np.cumsum(target[order] == c) / np.arange(1, len(order) + 1)
        ok = np.flatnonzero((right >= precision) & (np.arange(1, len(order) + 1) >= min_rows))
        if len(ok):
            out[c] = confidence[order[ok[-1]]]  # the deepest prefix that keeps the precision
    return out


def select_ranked(labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, cap: int) -> np.ndarray:
    """Positions of the photos at or above their label's threshold, at most `cap`: those furthest
    above it first, so that a cap does not fall on the rare classes alone."""
    confidence = probs[np.arange(len(labels)), labels]
    room = confidence - thresholds[labels]
    eligible = np.flatnonzero(room >= 0)
    return eligible[np.argsort(-room[eligible], kind="stable")][:cap]
