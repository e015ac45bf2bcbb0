"""What the submission should score on new people: the nested estimate moved by the gain of
averaging, measured on repeated folds, with an interval widened for the eval set's own people.

Why a second number: each OOF row of one repeat is predicted by ONE fold model, but the
submission averages all R x K fold models, an ensemble the nested estimate never sees (on
held-out synthetic data the submission scored 0.04-0.06 above it). With `folds.repeats: R`
every OOF row also has R held-out predictions; their average is an R-member ensemble. The
nested score of each method with 1 member per row (repeat 0 alone, s1) and with R (sR) fixes
the curve s(m) = s_inf - (s_inf - s1) / m (an average of m exchangeable members: the error
that averaging removes falls as 1/m), read at m = R x K members.

The interval: person resamples of the training people (paired, so s1 and sR move together)
give the estimate's own spread; the eval photos are other people, a sample of their own, so
the spread of a score on them is added: the same bootstrap spread scaled by sqrt(P_oof / P_eval)
(P_eval estimated from the eval images at the training set's photos per person).

It assumes the eval people are drawn like the training people, and that the members behave
like exchangeable draws; it does not hold when eval photos were pseudo-labelled and trained on
(a pseudo round), nor for models whose fold count differs from the spec's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.analysis.ensembles.uncertainty import Interval, PersonBootstrap

Z = 1.96  # the eval set's sampling spread enters as a normal 95% half-width


@dataclass(frozen=True)
class Expectation:
    """What the expected scores assume, for the console, weights.json and the report."""
    members_oof: int  # held-out predictions averaged per OOF row (folds.repeats)
    members_test: int  # fold models averaged per eval photo (repeats x folds)
    eval_people: float  # people in the eval set, estimated from its photos
    oof_people: int

    def record(self) -> dict:
        return {"members_per_oof_row": self.members_oof, "members_per_eval_photo": self.members_test,
                "eval_people_estimated": round(self.eval_people, 1), "oof_people": self.oof_people,
                "curve": "s(m) = s_inf - (s_inf - s1) / m, from s1 (1 member) and sR (R members)"}

    def text(self) -> str:
        return (f"nested score moved from {self.members_oof} held-out predictions per OOF row to the "
                f"{self.members_test} fold models the submission averages; interval adds the eval set's "
                f"~{self.eval_people:.0f} people")


def extrapolate(s1, s_r, repeats: int, members: int):
    """s(members) on the curve through s(1) = s1 and s(repeats) = s_r (arrays broadcast)."""
    drop = (np.asarray(s_r) - np.asarray(s1)) * repeats / (repeats - 1)  # s_inf - s1
    return np.asarray(s1) + drop * (1 - 1 / members)


def expected_interval(boot: PersonBootstrap, one_member: np.ndarray, r_members: np.ndarray,
                      e: Expectation) -> Interval:
    """Expected macro F1 of the submission with its 95% interval, from the method's nested
    labels with one held-out prediction per row and with R."""
    s1, s_r = boot.macro_f1s(one_member), boot.macro_f1s(r_members)
    draws = extrapolate(s1, s_r, e.members_oof, e.members_test)
    center = float(extrapolate(boot.point(one_member), boot.point(r_members), e.members_oof, e.members_test))
    tail = (1 - boot.level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    eval_half = Z * float(np.std(s_r)) * np.sqrt(e.oof_people / e.eval_people)
    return Interval(center, center - float(np.hypot(center - low, eval_half)),
                    center + float(np.hypot(high - center, eval_half)))


def expectation(repeats: int, n_splits: int, person: np.ndarray, eval_images: int) -> Expectation:
    people = len(np.unique(person))
    return Expectation(repeats, repeats * n_splits, eval_images / (len(person) / people), people)
