"""Which fitted method to submit (`blend.choose`): the top nested score, or the simplest
method that chance cannot tell from it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from orchestrator.analysis.ensembles.uncertainty import PersonBootstrap
from tasks.spec.experiment import BlendSpec

if TYPE_CHECKING:
    from orchestrator.analysis.ensembles.fitting import MethodResult


@dataclass(frozen=True)
class Choice:
    """How the chosen method was picked among the ranked ones."""
    rule: str  # "one_se" or "best" (blend.choose; "best" for a metric with no person bootstrap)
    top: str  # the method with the best nested score
    margin: float  # the top's nested score minus the chosen one's (0 when the top is chosen)
    noise: float  # standard deviation of that paired difference over person resamples

    def record(self) -> dict:
        return {"rule": self.rule, "top": self.top, "margin": round(self.margin, 5), "noise": round(self.noise, 5)}


def choose(boot: PersonBootstrap, ranked: list[MethodResult], spec: BlendSpec) -> tuple[int, Choice]:
    """The index in `ranked` (best nested score first) of the method to submit.

    one_se (CART's and glmnet's one-standard-error rule): of the methods whose nested macro F1
    is below the top one's by at most the standard deviation of the paired difference over
    person resamples, the one with the fewest fitted parts (Recipe.complexity), the better
    ranked among equals. With 17 noisy scores the top one is partly chosen for its luck; a
    simpler method that chance cannot tell from it has less to lose on new people.
    """
    top = ranked[0]
    if spec.choose == "best" or spec.metric != "macro_f1":
        return 0, Choice("best", top.fitted.recipe.name, 0.0, 0.0)
    top_draws = boot.macro_f1s(top.nested.labels)
    close = []
    for i, r in enumerate(ranked):
        margin = top.nested.scores.macro_f1 - r.nested.scores.macro_f1
        noise = float(np.std(top_draws - boot.macro_f1s(r.nested.labels)))
        if margin <= noise:
            close.append((r.fitted.recipe.complexity, i, margin, noise))
    _, index, margin, noise = min(close)  # the top itself is always close (margin 0)
    return index, Choice("one_se", top.fitted.recipe.name, float(margin), noise)
