"""What does not make sense for an attribute specialist (a model whose `train.target` is mask,
gender or age): checked on each model's resolved train section, named by the field's path."""
from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.labels import ATTRIBUTE_SIZES

if TYPE_CHECKING:
    from tasks.spec.experiment import ModelSpec, TrainSpec


def specialist_problems(index: int, model: ModelSpec, train: TrainSpec) -> list[str]:
    """What does not make sense for a specialist (train.target other than all), one line each,
    naming the field where it was set: the model's own train section, or the experiment's."""
    if train.target == "all":
        return []
    t, k = train.target, ATTRIBUTE_SIZES[train.target]

    def where(field: str) -> str:
        own = f"models.{index}.train.{field}"
        return own if field in model.train else f"{own} (from the experiment's train.{field})"

    problems = []
    if train.head == "multi":
        problems.append(f"{where('head')}: multi does not combine with target: {t}: a {t} specialist has one head, "
                        f"its attribute's ({k} classes); set head: single for it, or target: all")
    if train.age_mse > 0 and t != "age":
        problems.append(f"{where('age_mse')}: {train.age_mse:g} regresses the age, which a {t} specialist "
                        f"(target: {t}) does not predict; set age_mse: 0 for it")
    return problems
