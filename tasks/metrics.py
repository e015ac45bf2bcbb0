"""Scores of 18-class predictions: macro F1 (the competition's metric) and per attribute."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import f1_score

from tasks.labels import split_class


@dataclass(frozen=True)
class Scores:
    macro_f1: float
    accuracy: float
    mask_f1: float
    gender_f1: float
    age_f1: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def score(labels: np.ndarray, predicted: np.ndarray) -> Scores:
    """Macro F1 over the classes present in labels or predictions (sklearn's default, as
    the competition's scorer used)."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    parts = [f1_score(t, p, average="macro", zero_division=0)
             for t, p in zip(split_class(labels), split_class(predicted))]
    return Scores(
        macro_f1=float(f1_score(labels, predicted, average="macro", zero_division=0)),
        accuracy=float((labels == predicted).mean()) if len(labels) else 0.0,
        mask_f1=float(parts[0]), gender_f1=float(parts[1]), age_f1=float(parts[2]),
    )
