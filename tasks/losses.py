"""Losses by short name, combinable with weights, all on soft targets (so mixing just works).

A target is a probability vector per sample: one-hot for plain batches, a blend of two
one-hots after CutMix/MixUp. Multi-head models apply each term to every head.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tasks.labels import NUM_CLASSES
from tasks.model import HEAD_SIZES
from tasks.spec import LossTerm, TrainSpec


@dataclass(frozen=True)
class Targets:
    """Soft 18-class targets plus the raw (mixed) age, for the optional age regression."""

    soft: torch.Tensor  # (N, 18)
    age: torch.Tensor  # (N,) float


def focal(logits, target, gamma: float):
    logp = torch.log_softmax(logits.float(), dim=1)
    return (-target * (1 - logp.exp()) ** gamma * logp).sum(1).mean()


def soft_f1(logits, target, eps: float = 1e-7):
    """1 - soft macro F1: counts built from probabilities, differentiable."""
    prob = torch.softmax(logits.float(), dim=1)
    tp = (prob * target).sum(0)
    fp = (prob * (1 - target)).sum(0)
    fn = ((1 - prob) * target).sum(0)
    return 1 - (2 * tp / (2 * tp + fp + fn + eps)).mean()


def term_loss(term: LossTerm, logits, target, class_weight):
    # torch's cross-entropy takes probability targets: mixed (CutMix/MixUp) batches need nothing
    # else, and its label smoothing mixes the target with the uniform distribution.
    if term.name == "ce":
        return F.cross_entropy(logits.float(), target)
    if term.name == "weighted_ce":
        return F.cross_entropy(logits.float(), target, weight=class_weight)
    if term.name == "label_smoothing":
        return F.cross_entropy(logits.float(), target, label_smoothing=term.smoothing)
    if term.name == "focal":
        return focal(logits, target, term.gamma)
    return soft_f1(logits, target)


def head_targets(soft: torch.Tensor) -> dict[str, torch.Tensor]:
    """Marginal soft targets of each attribute from the joint 18-class target."""
    cube = soft.reshape(-1, 3, 2, 3)  # mask x gender x age, as class = mask*6 + gender*3 + age
    return {"class": soft, "mask": cube.sum((2, 3)), "gender": cube.sum((1, 3)), "age": cube.sum((1, 2))}


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
    loss = torch.zeros((), device=targets.soft.device)
    for head in ("class", *HEAD_SIZES):
        if head not in outputs:
            continue
        for term in train.loss:
            loss = loss + head_weight[head] * term.weight * term_loss(
                term, outputs[head], per_head[head], weights[head])
    if "age_value" in outputs:
        # Ages scaled to ~[0, 1] so the MSE weight means the same for any age range.
        loss = loss + train.age_mse * F.mse_loss(outputs["age_value"].float().squeeze(1), targets.age / 60.0)
    return loss
