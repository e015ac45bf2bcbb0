"""Scores of 18-class predictions: macro F1 (the competition's metric) and per attribute."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import f1_score

from tasks.labels import ALL, ATTRIBUTES, split_class, target_labels


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


def score_target(labels: np.ndarray, logits: np.ndarray, target: str = ALL) -> Scores:
    """A model's scores on what it predicts: the 18 classes of `labels` (score), or, for a
    specialist (train.target), its attribute alone: macro F1 and accuracy are that attribute's,
    as is its own per-attribute F1; the F1 of the attributes it does not predict is NaN."""
    predicted = np.asarray(logits).argmax(1)
    if target == ALL:
        return score(labels, predicted)
    truth = target_labels(labels, target)
    f1 = float(f1_score(truth, predicted, average="macro", zero_division=0))
    parts = {f"{a}_f1": f1 if a == target else float("nan") for a in ATTRIBUTES}
    return Scores(macro_f1=f1, accuracy=float((truth == predicted).mean()) if len(truth) else 0.0, **parts)
