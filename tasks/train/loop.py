"""One training epoch over a loader, with everything the epochs of one job share in one place."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from tasks.data.batches import mix_batch, to_device
from tasks.train.inference import ModelContext
from tasks.train.losses import Targets, hits, total_loss


@dataclass(frozen=True)
class EpochStats:
    loss: float
    accuracy: float  # against the (unmixed) training label, or a pseudo target's most likely class
    images: int
    seconds: float


@dataclass(frozen=True)
class Fitting:
    """What every training epoch of one job shares."""

    ctx: ModelContext  # the model, its device, normalisation, train settings and ranks
    net: torch.nn.Module  # what is trained: the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: object | None  # a timm scheduler, stepped per update
    scaler: torch.amp.GradScaler
    class_weights: dict[str, torch.Tensor]  # per head, for the weighted_ce loss


def train_epoch(fit: Fitting, loader: DataLoader, epoch: int, generator: torch.Generator) -> EpochStats:
    """One pass over `loader`; mixing draws come from `generator` alone."""
    dev, train, optimizer, scheduler, scaler = fit.ctx.device, fit.ctx.train, fit.optimizer, fit.scheduler, fit.scaler
    fit.net.train()
    started, total, correct, seen = time.monotonic(), 0.0, 0, 0
    updates = len(loader)
    for step, (images, soft, ages, weights) in enumerate(loader):
        x = to_device(images, *fit.ctx.norm, dev.device, dev.channels_last)
        given = Targets(soft.to(dev.device), ages.to(dev.device).float(), weights.to(dev.device).float())
        labels = given.soft.argmax(1)
        x, targets = mix_batch(x, given, train.mix, generator)
        with dev.autocast():
            outputs = fit.net(x)
        loss = total_loss(train, outputs, targets, fit.class_weights)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step_update(num_updates=epoch * updates + step + 1)
        total += loss.item() * len(labels)
        correct += hits(outputs, given.soft)  # of the 18 classes, or a specialist's attribute
        seen += len(labels)
    return EpochStats(total / max(seen, 1), correct / max(seen, 1), seen, time.monotonic() - started)


def eval_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    logp = torch.log_softmax(torch.from_numpy(logits).float(), 1)
    return float(torch.nn.functional.nll_loss(logp, torch.tensor(labels).long()))
