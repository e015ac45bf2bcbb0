"""What the submission should score on new people: the nested estimate moved by the gain of
averaging, measured on repeated folds, with an interval widened for the eval set's own people.

Why a second number: each OOF row of one repeat is predicted by ONE fold model, but the
submission averages all R x K fold models, an ensemble the nested estimate never sees (on
held-out synthetic data the submission scored 0.04-0.06 above it). With `folds.repeats: R`
every OOF row also has R held-out predictions; their average is an R-member ensemble. The
nested score of each method with 1 member per row (each repeat alone, their mean s1) and with R (sR) fixes
the curve s(m) = s_inf - (s_inf - s1) / m (an average of m exchangeable members: the error
that averaging removes falls as 1/m), read at m = R x K members.

The interval: person resamples of the training people (paired, so s1 and sR move together)
give the estimate's own spread; the eval photos are other people, a sample of their own, so a
second set of resamples, each of as many people as the eval set has (P_eval, estimated from the
eval images at the training set's photos per person), adds the spread of a score on them, and
their mean moves the estimate by what that size does to macro F1 (on few people a rare class is
often absent, and predicting it then scores 0).

It assumes the eval people are drawn like the training people, and that the members behave
like exchangeable draws; it does not hold when eval photos were pseudo-labelled and trained on
(a pseudo round), nor for models whose fold count differs from the spec's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.analysis.ensembles.uncertainty import Interval, PersonBootstrap

EVAL_SEED = 1  # the eval-set resamples: drawn apart from the training people's (seed 0)


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


def expected_interval(boot: PersonBootstrap, one_member: list[np.ndarray], r_members: np.ndarray,
                      e: Expectation) -> Interval:
    """Expected macro F1 of the submission with its 95% interval, from the method's nested
    labels with one held-out prediction per row (one array per repeat: their mean score is s1,
    R times less noisy than one repeat's) and with the R averaged."""
    s1 = np.mean([boot.macro_f1s(labels) for labels in one_member], axis=0)
    s_r = boot.macro_f1s(r_members)
    draws = extrapolate(s1, s_r, e.members_oof, e.members_test)
    point_1 = float(np.mean([boot.point(labels) for labels in one_member]))
    at_oof = float(extrapolate(point_1, boot.point(r_members), e.members_oof, e.members_test))
    # The eval set: resamples of as many people as it has, from the OOF people. Besides its
    # spread this gives its size's own pull: on few people a rare class is often absent, and a
    # prediction of an absent class scores 0 in the macro mean.
    on_eval = PersonBootstrap.draw(boot.target, boot.codes, seed=EVAL_SEED,
                                   size=max(1, round(e.eval_people))).macro_f1s(r_members)
    shift = float(on_eval.mean()) - boot.point(r_members)
    total = draws + shift + (on_eval - on_eval.mean())
    tail = (1 - boot.level) / 2
    low, high = np.quantile(total, [tail, 1 - tail])
    return Interval(at_oof + shift, float(low), float(high))


def expectation(repeats: int, n_splits: int, person: np.ndarray, eval_images: int) -> Expectation:
    people = len(np.unique(person))
    return Expectation(repeats, repeats * n_splits, eval_images / (len(person) / people), people)
