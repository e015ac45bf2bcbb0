"""`pseudo:` a second round that also trains on eval photos labelled by an earlier experiment.

`per_fold: true` (the default) keeps the OOF honest: the fold-k job learns only labels made by
round-1 models that never saw fold k's people. `per_fold: false` is the usual practice (labels
from the full round-1 blend): its OOF scores, and everything fitted on them, are optimistic.
The labels are built by the driver (orchestrator.analysis.pseudo_labels.labelling); a job only reads them.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class PerClassSpec(BaseModel):
    """A threshold per class instead of one: each class's is the lowest blended probability at
    which round 1's OOF rows given that label were still right `precision` of the time."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    precision: float = Field(0.9, gt=0, lt=1)  # share of a class's kept labels expected right
    min_rows: int = Field(5, ge=1)  # OOF rows a class's threshold must rest on; fewer: no rows of it


class PseudoSpec(BaseModel):
    # tasks.spec.experiment.Strict, repeated: tasks.spec.experiment imports this module.
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Path  # an earlier experiment's results folder (results/<name>), same data and folds
    threshold: float = Field(0.9, ge=0, le=1)  # minimum probability of the pseudo label
    weight: float = Field(1.0, gt=0)  # a pseudo row's share of the loss, against 1 for a labelled row
    soft: bool = False  # train on the blended probabilities instead of the hard label
    # Cap of pseudo rows in a fold's training set (labelled + pseudo); the most confident are kept.
    max_share: float = Field(0.5, gt=0, lt=1)
    per_fold: bool = True  # fold k's labels only from round-1 models that never saw fold k's people
    # One global `threshold` kept only the four "mask worn, under 60" classes; per class, the rare
    # classes that macro F1 weighs equally get rows too (`threshold` is then unused).
    per_class: PerClassSpec | None = None


def oof_optimistic(pseudo: PseudoSpec | None) -> bool:
    """True for models whose OOF rows are flattered: trained on labels from models that saw them."""
    return pseudo is not None and not pseudo.per_fold
