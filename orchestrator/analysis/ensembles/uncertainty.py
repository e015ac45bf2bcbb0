"""How far a macro F1 could move by chance: person-level bootstrap intervals.

A person's seven photos share a face, an age and usually an error, so they are not seven
independent samples: resampling photos would give intervals about sqrt(7) too narrow.
Here PEOPLE are drawn with replacement and each drawn person brings all their rows; the
predictions stay fixed (no refitting), so an interval says how much the score of these
predictions depends on which people happened to be in the training set.

Resampling is vectorised: each person's true-positive, true and predicted counts per
class are summed once, and a resample's class counts are a (resamples x people) matrix of
draw multiplicities times them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import f1_score

from tasks.labels import NUM_CLASSES

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
DESCRIPTION = f"person bootstrap, {LEVEL:.0%}"


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile bootstrap interval."""
    estimate: float
    low: float
    high: float

    def record(self) -> list[float]:
        return [round(self.low, 5), round(self.high, 5)]

    def text(self, signed: bool = False) -> str:
        """'0.4312 [0.401, 0.462]', or with signed=True '+0.006 [-0.011, +0.022]'."""
        if signed:
            return f"{self.estimate:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"
        return f"{self.estimate:.4f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class PersonBootstrap:
    """One set of people resamples for fixed targets: every method scored on it is paired."""
    target: np.ndarray  # (N,) true class per row
    codes: np.ndarray  # (N,) index of each row's person
    draws: np.ndarray  # (B, P) how often each person is drawn in each resample
    true_counts: np.ndarray  # (B, C) rows of each true class per resample
    level: float

    @classmethod
    def draw(cls, target: np.ndarray, person: np.ndarray, n: int = RESAMPLES, seed: int = SEED,
             level: float = LEVEL, size: int | None = None) -> PersonBootstrap:
        """`size`: people per resample (default: as many as there are), e.g. an eval set's count."""
        target = np.asarray(target, np.int64)
        _, codes = np.unique(np.asarray(person), return_inverse=True)
        people = int(codes.max()) + 1 if len(codes) else 0
        picks = np.random.default_rng(seed).integers(0, people, (n, people if size is None else size))
        # Multiplicities via one bincount: row b's picks land in b*P .. b*P+P-1.
        draws = np.bincount((np.arange(n)[:, None] * people + picks).ravel(), minlength=n * people)
        draws = draws.reshape(n, people).astype(np.float32)  # counts stay exact below 2**24
        return cls(target, codes, draws, draws @ _per_person(codes, target, people), level)

    def macro_f1s(self, predictions: np.ndarray) -> np.ndarray:
        """(B,) macro F1 of fixed predictions on each resample."""
        people = self.draws.shape[1]
        pred = np.asarray(predictions, np.int64)
        hit = _per_person(self.codes, self.target, people, weights=pred == self.target)
        return _macro_f1(self.draws @ hit, self.true_counts, self.draws @ _per_person(self.codes, pred, people))

    def point(self, predictions: np.ndarray) -> float:
        """Macro F1 on the rows as they are (every person once)."""
        return float(f1_score(self.target, predictions, average="macro", zero_division=0))

    def interval(self, predictions: np.ndarray) -> Interval:
        return self._percentiles(self.point(predictions), self.macro_f1s(predictions))

    def difference(self, a: np.ndarray, b: np.ndarray) -> Interval:
        """Macro F1 of a minus that of b, both on the same resampled people (paired)."""
        return self._percentiles(self.point(a) - self.point(b), self.macro_f1s(a) - self.macro_f1s(b))

    def _percentiles(self, estimate: float, values: np.ndarray) -> Interval:
        tail = (1 - self.level) / 2
        low, high = np.quantile(values, [tail, 1 - tail])
        return Interval(float(estimate), float(low), float(high))


def _per_person(codes: np.ndarray, classes: np.ndarray, people: int, weights=None) -> np.ndarray:
    """(P, C) count (or weighted count) of each person's rows per class."""
    flat = np.bincount(codes * NUM_CLASSES + classes, weights, minlength=people * NUM_CLASSES)
    return flat.reshape(people, NUM_CLASSES).astype(np.float32)


def _macro_f1(hit: np.ndarray, true: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Row-wise macro F1 from class counts; like sklearn, a class neither present nor
    predicted in a resample is left out of its mean."""
    hit, denom = hit.astype(np.float64), (true + predicted).astype(np.float64)
    present = denom > 0
    f1 = np.divide(2 * hit, denom, out=np.zeros_like(hit), where=present)
    return f1.sum(-1) / np.maximum(present.sum(-1), 1)


def person_bootstrap(target: np.ndarray, predictions: np.ndarray, person: np.ndarray, n: int = RESAMPLES,
                     seed: int = SEED) -> Interval:
    """Macro F1 of fixed predictions with a 95% person-level bootstrap interval."""
    return PersonBootstrap.draw(target, person, n, seed).interval(predictions)


def paired_person_bootstrap(target: np.ndarray, a: np.ndarray, b: np.ndarray, person: np.ndarray,
                            n: int = RESAMPLES, seed: int = SEED) -> Interval:
    """Macro F1 of predictions a minus b, with a 95% paired person-level bootstrap interval."""
    return PersonBootstrap.draw(target, person, n, seed).difference(a, b)
