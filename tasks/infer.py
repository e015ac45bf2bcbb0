"""Test inference from a finished job's saved weights, without training: the eval images
through the job's own eval pipeline, optionally with flip TTA. No Ray here; the
orchestrator (`orchestrator/reinfer.py`) fans it out over the cluster's slots.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tasks.job import eval_loader, normalisation
from tasks.job_io import Job, write_test_logits
from tasks.model import Net, build_model
from tasks.prepare import Dataset, load_dataset, rows_hash
from tasks.spec import Experiment, TrainSpec
from tasks.train_loop import Device, predict, select_device


class InferError(RuntimeError):
    """A fold model's saved weights are missing or do not fit the model the spec builds."""


@dataclass(frozen=True)
class FoldModel:
    """A fold's best weights in the job's architecture, placed on this machine's device."""

    net: Net
    device: Device
    norm: tuple[torch.Tensor, torch.Tensor]  # the backbone's mean and std, NCHW
    train: TrainSpec  # the model's resolved train section (input size, eval pipeline, TTA)


@dataclass(frozen=True)
class TestInference:
    """What one fold model's re-inference wrote."""

    path: Path  # the job's test.parquet
    images: int
    tta: bool
    device: str
    seconds: float


def load_fold_model(spec: Experiment, model_name: str, fold: int, weights_path: Path) -> FoldModel:
    """The model as the job built it, with `best.pt` loaded (no pretrained download: the
    weights come from the file)."""
    weights_path = Path(weights_path)
    model_spec = spec.model(model_name)
    train = spec.train_for(model_spec)
    if not weights_path.is_file():
        raise InferError(f"{model_name} fold {fold}: no saved weights at {weights_path}. Is the job finished, "
                         "and is its folder visible on this node (results/ on a filesystem every node sees)?")
    net = build_model(model_spec.model_copy(update={"pretrained": False, "pretrained_path": None}), train)
    try:
        net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    except Exception as err:  # unpickling and shape/key mismatches raise several types
        raise InferError(f"{model_name} fold {fold}: {weights_path} does not load into {model_spec.backbone} "
                         f"with head {train.head!r} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                         "were the weights saved by another spec?") from None
    device = select_device(train)
    device.place(net)
    return FoldModel(net, device, normalisation(net, device), train)


def infer_test(spec: Experiment, model_name: str, fold: int, weights_path: Path, tta: bool,
               dataset: Dataset | None = None) -> np.ndarray:
    """(eval images, 18) float32 logits in info.csv order, as the job's own test inference."""
    dataset = dataset or load_dataset(spec, verbose=False)
    fm = load_fold_model(spec, model_name, fold, weights_path)
    return predict(fm.net, eval_loader(dataset.eval_cache, dataset.eval, fm.train), fm.device, fm.norm, tta)


def reinfer_job(spec: Experiment, job: Job, tta: bool, dataset: Dataset | None = None) -> TestInference:
    """Replace a finished job's test.parquet with fresh inference from its best.pt."""
    started = time.monotonic()
    dataset = dataset or load_dataset(spec, verbose=False)
    test = infer_test(spec, job.model, job.fold, job.out_dir / "best.pt", tta, dataset)
    path = write_test_logits(job, spec, dataset.eval, test, rows_hash(spec, dataset))
    device = select_device(spec.train_for(spec.model(job.model))).device
    return TestInference(path, len(test), tta, str(device), time.monotonic() - started)
