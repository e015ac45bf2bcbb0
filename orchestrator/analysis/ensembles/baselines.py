"""The simpler baselines a chosen blend method must beat to be worth its fitting: the equal soft
vote and the best single model, each compared by the nested macro F1 difference, paired by person."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.analysis.ensembles.uncertainty import Interval, PersonBootstrap

if TYPE_CHECKING:
    from orchestrator.analysis.ensembles.fitting import MethodResult


@dataclass(frozen=True)
class Comparison:
    """The chosen method against a simpler baseline: nested macro F1 difference, paired by person."""
    method: str  # the baseline's method name
    baseline: str  # what it is, in words: "the equal soft vote", "the best single model"
    difference: Interval | None  # chosen minus baseline; None when the chosen method is the baseline

    @property
    def is_chosen(self) -> bool:
        return self.difference is None

    @property
    def clearly_better(self) -> bool:
        return self.difference is not None and self.difference.low > 0


# The baselines a chosen method must beat to be worth its fitting, each with the names it can have:
# the equal soft vote (per-attribute decoded only when the spec decodes no other way), then the
# best single model. Both are always reported, so that a choice like soft_equal+attr is still
# weighed against the plain equal vote, and a choice of the equal vote against one model.
BASELINES = (("the equal soft vote", ("soft_equal", "soft_equal+attr")), ("the best single model", ("single",)))


def versus_baselines(boot: PersonBootstrap, ranked: list[MethodResult],
                     chosen: MethodResult | None = None) -> tuple[Comparison, ...]:
    """`chosen` (by default ranked[0], the chosen method) against each baseline among `ranked`,
    paired by person."""
    by_name = {r.fitted.recipe.name: r for r in ranked}
    chosen = chosen or ranked[0]
    out = []
    for baseline, names in BASELINES:
        name = next((n for n in names if n in by_name), None)
        if name is None:  # not planned (a refit of one recipe alone)
            continue
        same = name == chosen.fitted.recipe.name
        out.append(Comparison(name, baseline, None if same else boot.difference(
            chosen.nested.labels, by_name[name].nested.labels)))
    return tuple(out)
