"""Prediction with a model in place: the eval loader, the backbone's normalisation, logits in
row order (sharded over ranks when a process group runs), with a resolved TTA (`resolve_tta` of
the model's train section; tasks/train/tta.py).

Shared by training (validation, OOF and test logits) and by re-inference from saved weights,
which therefore never imports the training loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from tasks.data.batches import CachedImages, Samples, make_loader, to_device
from tasks.labels import NUM_CLASSES
from tasks.spec.experiment import TrainSpec
from tasks.spec.techniques import Tta
from tasks.train.device import Device
from tasks.train.distributed import Ranks, gather_rows
from tasks.train.model import output_logits
from tasks.train.tta import mean_over_views


@dataclass(frozen=True)
class ModelContext:
    """A model placed on its device with what every pass over it needs."""

    model: torch.nn.Module
    device: Device
    norm: tuple[torch.Tensor, torch.Tensor]  # the backbone's mean and std, NCHW
    train: TrainSpec  # the model's resolved train section (input size, pipelines, batch size)
    ranks: Ranks = Ranks()


def model_context(model: torch.nn.Module, device: Device, train: TrainSpec, ranks: Ranks = Ranks()) -> ModelContext:
    return ModelContext(model, device, normalisation(model, device), train, ranks)


def normalisation(model, dev: Device) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's pretrained mean/std (timm's data config), shaped for NCHW batches."""
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model.body)
    return tuple(torch.tensor(config[k], device=dev.device).view(1, 3, 1, 1) for k in ("mean", "std"))


def eval_loader(cache, rows, train: TrainSpec) -> DataLoader:
    """Unshuffled, un-augmented batches (the spec's eval pipeline) in `rows` order."""
    labels = rows["label"].to_numpy() if "label" in rows else np.zeros(len(rows), np.int64)
    ages = rows["age"].to_numpy() if "age" in rows else np.zeros(len(rows))
    data = CachedImages(Samples.of(cache, rows["image_key"], labels, ages), train.augment.eval, train.input_size)
    return make_loader(data, train.batch_size * 2, train.loader_workers, shuffle=False)


@torch.no_grad()
def predict(model, loader: DataLoader, dev: Device, norm, tta: Tta) -> np.ndarray:
    """(N, 18) float32 logits in loader order (a specialist's: (N, its attribute's classes)), the
    mean over the views of `tta` (NO_TTA: none)."""
    model.eval()
    out = []
    for images, *_ in loader:
        x = to_device(images, *norm, dev.device, dev.channels_last)
        with dev.autocast():
            logits = mean_over_views(lambda view: output_logits(model(view)).float(), x, tta)
        out.append(logits.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), np.float32)


def predict_rows(ctx: ModelContext, cache, rows, tta: Tta) -> np.ndarray:
    """(len(rows), 18) logits in row order; each rank predicts rows[rank::world]."""
    ranks = ctx.ranks
    share = rows.iloc[ranks.rank::ranks.world] if ranks.distributed else rows
    logits = predict(ctx.model, eval_loader(cache, share, ctx.train), ctx.device, ctx.norm, tta)
    return gather_rows(logits, ranks)
