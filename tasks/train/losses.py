"""Losses by short name, combinable with weights, all on soft targets (so mixing just works).

A target is a probability vector per sample: one-hot for plain batches, a blend of two
one-hots after CutMix/MixUp, a round-1 blend's probabilities for a soft pseudo label.
Multi-head models apply each term to every head. Every term is a weighted mean over the batch:
a pseudo-labelled row counts `pseudo.weight` times a labelled one (weight 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tasks.labels import NUM_CLASSES
from tasks.spec.experiment import LossTerm, TrainSpec
from tasks.train.model import HEAD_SIZES, output_logits, specialty


@dataclass(frozen=True)
class Targets:
    """Soft 18-class targets, the raw (mixed) age for the optional age regression (NaN where
    unknown: pseudo rows), and each row's loss weight."""

    soft: torch.Tensor  # (N, 18)
    age: torch.Tensor  # (N,) float
    weight: torch.Tensor | None = None  # (N,); None: every row 1

    @classmethod
    def of_labels(cls, labels: torch.Tensor, ages: torch.Tensor) -> Targets:
        return cls(F.one_hot(labels.long(), NUM_CLASSES).float(), ages.float())

    def weights(self) -> torch.Tensor:
        return torch.ones(len(self.soft), device=self.soft.device) if self.weight is None else self.weight.float()


def weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (values * weight).sum() / weight.sum().clamp_min(1e-12)


def focal(logits, target, gamma: float, weight):
    logp = torch.log_softmax(logits.float(), dim=1)
    return weighted_mean((-target * (1 - logp.exp()) ** gamma * logp).sum(1), weight)


def soft_f1(logits, target, weight, eps: float = 1e-7):
    """1 - soft macro F1: counts built from probabilities (each row counted `weight` times),
    differentiable."""
    prob = torch.softmax(logits.float(), dim=1) * weight[:, None]
    tp = (prob * target).sum(0)
    fp = (prob * (1 - target)).sum(0)
    fn = ((weight[:, None] - prob) * target).sum(0)
    return 1 - (2 * tp / (2 * tp + fp + fn + eps)).mean()


def term_loss(term: LossTerm, logits, target, class_weight, weight):
    # torch's cross-entropy takes probability targets: mixed (CutMix/MixUp) batches and soft
    # pseudo labels need nothing else, and its label smoothing mixes the target with the uniform.
    logits = logits.float()
    if term.name == "ce":
        return weighted_mean(F.cross_entropy(logits, target, reduction="none"), weight)
    if term.name == "weighted_ce":
        return weighted_mean(F.cross_entropy(logits, target, weight=class_weight, reduction="none"), weight)
    if term.name == "label_smoothing":
        return weighted_mean(F.cross_entropy(logits, target, label_smoothing=term.smoothing, reduction="none"),
                             weight)
    if term.name == "focal":
        return focal(logits, target, term.gamma, weight)
    return soft_f1(logits, target, weight)


def head_targets(soft: torch.Tensor) -> dict[str, torch.Tensor]:
    """Marginal soft targets of each attribute from the joint 18-class target."""
    cube = soft.reshape(-1, 3, 2, 3)  # mask x gender x age, as class = mask*6 + gender*3 + age
    return {"class": soft, "mask": cube.sum((2, 3)), "gender": cube.sum((1, 3)), "age": cube.sum((1, 2))}


def hits(outputs: dict[str, torch.Tensor], soft: torch.Tensor) -> int:
    """Rows whose predicted class is the target's most likely one: of the 18 classes, or of a
    specialist's own attribute (its targets' marginal)."""
    own = specialty(outputs)
    target = soft if own is None else head_targets(soft)[own]
    return int((output_logits(outputs).argmax(1) == target.argmax(1)).sum())


def class_weights(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inverse-frequency weights per head from the training fold's labels (mean 1)."""
    one_hot = F.one_hot(labels.long(), NUM_CLASSES).float()
    out = {}
    for head, counts in head_targets(one_hot).items():
        totals = counts.sum(0).clamp(min=1)
        weight = totals.sum() / totals
        out[head] = weight / weight.mean()
    return out


def total_loss(train: TrainSpec, outputs: dict[str, torch.Tensor], targets: Targets,
               weights: dict[str, torch.Tensor]) -> torch.Tensor:
    per_head = head_targets(targets.soft)
    head_weight = {"class": 1.0, **train.head_weights.model_dump()}
    row_weight = targets.weights()
    loss = torch.zeros((), device=targets.soft.device)
    for head in ("class", *HEAD_SIZES):
        if head not in outputs:
            continue
        for term in train.loss:
            loss = loss + head_weight[head] * term.weight * term_loss(
                term, outputs[head], per_head[head], weights[head], row_weight)
    known = torch.isfinite(targets.age)  # a pseudo row's age is unknown (NaN, also once mixed)
    if "age_value" in outputs and known.any():
        # Ages scaled to ~[0, 1] so the MSE weight means the same for any age range.
        error = (outputs["age_value"].float().squeeze(1)[known] - targets.age[known] / 60.0) ** 2
        loss = loss + train.age_mse * weighted_mean(error, row_weight[known])
    return loss
