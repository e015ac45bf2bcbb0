"""One training epoch over a loader, with everything the epochs of one job share in one place.

An optimiser step follows every `train.grad_accum` batches (the last, shorter group of an epoch
too), each batch's loss divided by its group's size so that a step sees the group's mean
gradient; the schedule and the EMA count optimiser steps. Under DDP the gradients are
all-reduced once per step (`no_sync` before). With `clip_grad`, the gradients are unscaled
(AMP) and their total norm clipped (timm's norm clipping) before the step.
"""
from __future__ import annotations

import contextlib
import math
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
    scheduler: object | None  # a timm scheduler, stepped per optimiser step
    scaler: torch.amp.GradScaler
    class_weights: dict[str, torch.Tensor]  # per head, for the weighted_ce loss
    ema: object | None = None  # timm's ModelEmaV3 of ctx.model when train.ema is set

    @property
    def judged(self) -> ModelContext:
        """The model that is validated, picks the best epoch and is saved: the EMA when on."""
        if self.ema is None:
            return self.ctx
        return ModelContext(self.ema.module, self.ctx.device, self.ctx.norm, self.ctx.train, self.ctx.ranks)


def optimizer_steps(batches: int, accumulate: int) -> int:
    """Optimiser steps in an epoch of `batches`: a trailing partial group makes one too."""
    return math.ceil(batches / accumulate)


def train_epoch(fit: Fitting, loader: DataLoader, epoch: int, generator: torch.Generator) -> EpochStats:
    """One pass over `loader`; mixing draws come from `generator` alone."""
    dev, train = fit.ctx.device, fit.ctx.train
    fit.net.train()
    started, total, correct, seen = time.monotonic(), 0.0, 0, 0
    batches, accumulate = len(loader), train.grad_accum
    steps = optimizer_steps(batches, accumulate)
    fit.optimizer.zero_grad(set_to_none=True)
    for i, (images, soft, ages, weights) in enumerate(loader):
        x = to_device(images, *fit.ctx.norm, dev.device, dev.channels_last)
        given = Targets(soft.to(dev.device), ages.to(dev.device).float(), weights.to(dev.device).float())
        labels = given.soft.argmax(1)
        x, targets = mix_batch(x, given, train.mix, generator)
        group_start = i - i % accumulate
        group = min(accumulate, batches - group_start)  # batches in this step's group
        last = i == group_start + group - 1
        # DDP all-reduces on the group's last backward only
        with contextlib.nullcontext() if last or not hasattr(fit.net, "no_sync") else fit.net.no_sync():
            with dev.autocast():
                outputs = fit.net(x)
            loss = total_loss(train, outputs, targets, fit.class_weights)
            fit.scaler.scale(loss / group).backward()
        if last:
            optimizer_step(fit, epoch * steps + i // accumulate + 1)
        total += loss.item() * len(labels)
        correct += hits(outputs, given.soft)  # of the 18 classes, or a specialist's attribute
        seen += len(labels)
    return EpochStats(total / max(seen, 1), correct / max(seen, 1), seen, time.monotonic() - started)


def optimizer_step(fit: Fitting, number: int) -> None:
    """The job's `number`-th optimiser step (from 1): clip, step, schedule, EMA."""
    from timm.utils import dispatch_clip_grad

    clip = fit.ctx.train.clip_grad
    if clip is not None:
        fit.scaler.unscale_(fit.optimizer)  # clip the true gradients, not the fp16-scaled ones
        dispatch_clip_grad(fit.ctx.model.parameters(), clip, mode="norm")
    fit.scaler.step(fit.optimizer)
    fit.scaler.update()
    fit.optimizer.zero_grad(set_to_none=True)
    if fit.scheduler is not None:
        fit.scheduler.step_update(num_updates=number)
    if fit.ema is not None:
        fit.ema.update(fit.ctx.model, step=number)


def make_ema(model: torch.nn.Module, train):
    """timm's ModelEmaV3 of `model` (on its device, in its dtype) per train.ema, or None."""
    if train.ema is None:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=train.ema.decay, use_warmup=train.ema.warmup)


def eval_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    logp = torch.log_softmax(torch.tensor(logits).float(), 1)  # a copy: Ray's arrays are read-only
    return float(torch.nn.functional.nll_loss(logp, torch.tensor(labels).long()))
