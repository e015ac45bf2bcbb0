"""`refit:` after the folds, one model per listed model trained on every training person.

A fold model sees (K-1)/K of the people; the refit model sees all of them, for the epoch count
the folds chose (`epochs: best`, the median of the fold models' best epochs) on the folds' own
learning-rate schedule, stopped there. It has no held-out rows, so nothing is fitted or scored
on it: the blend applies the weights it fitted on the fold models' OOF rows to test logits
that include it (`combine`).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

REFIT_FOLD = -1  # the fold number a refit model's logits and results carry: every person, no fold


class RefitSpec(BaseModel):
    # tasks.spec.experiment.Strict, repeated: tasks.spec.experiment imports this module.
    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: Literal["best"] | Annotated[int, Field(ge=1)] = "best"
    models: list[str] | None = None  # None: every model that predicts all 18 classes
    # replace: the refit model's test logits alone; average: half and half with its fold models'
    # mean. replace scored higher on the eval photos on 5 of 5 draws (benchmarks/README.md, "Refit").
    combine: Literal["average", "replace"] = "replace"


def refit_problems(refit: RefitSpec | None, targets: dict[str, str], schedulers: dict[str, str],
                   parts: dict[str, bool]) -> list[str]:
    """What makes `refit:` unusable with the rest of the spec, one `field: why; what to do` line each.
    `targets` and `schedulers`: each model's train.target and scheduler name; `parts`: whether the
    spec has `pseudo:` and `search:`."""
    if refit is None:
        return []
    problems = [f"refit: does not combine with `{part}:` yet; remove one of them" for part, on in parts.items() if on]
    for i, name in enumerate(refit.models or []):
        if name not in targets:
            problems.append(f"refit.models.{i}: no model named {name!r}; the spec's models are {sorted(targets)}")
        elif targets[name] != "all":
            problems.append(f"refit.models.{i}: {name!r} is a {targets[name]} specialist (train.target); "
                            "refit takes models of all 18 classes only")
    for name in refit_models(refit, targets):
        if schedulers.get(name) == "plateau":
            problems.append(f"refit: model {name!r} uses scheduler plateau, which steps on validation scores a "
                            "refit model does not have; choose another train.scheduler.name or leave it out of "
                            "refit.models")
    return problems


def refit_models(refit: RefitSpec, targets: dict[str, str]) -> list[str]:
    """The models to refit, in spec order: those listed, else every all-class model."""
    wanted = set(refit.models) if refit.models is not None else {m for m, t in targets.items() if t == "all"}
    return [m for m in targets if m in wanted]
