"""Inference from a finished job's saved weights, without training: its OOF rows and the eval
images through the job's own eval pipeline, with the model's TTA or another. No Ray here; the
orchestrator (`orchestrator/cluster/reinfer.py`) fans it out over the cluster's slots and
writes the logits (`tasks.job_io.write_job_logits`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tasks.data.preparation import Dataset, load_dataset
from tasks.errors import UserError
from tasks.spec.experiment import Experiment, TrainSpec
from tasks.spec.techniques import Tta, resolve_tta
from tasks.train.device import Device, select_device
from tasks.train.inference import eval_loader, normalisation, predict
from tasks.train.model import Net, build_model


class InferError(UserError, RuntimeError):
    """A fold model's saved weights are missing or do not fit the model the spec builds."""


@dataclass(frozen=True)
class FoldModel:
    """A fold's best weights in the job's architecture, placed on this machine's device."""

    net: Net
    device: Device
    norm: tuple[torch.Tensor, torch.Tensor]  # the backbone's mean and std, NCHW
    train: TrainSpec  # the model's resolved train section (input size, eval pipeline, TTA)

    @property
    def tta(self) -> Tta:
        """The TTA the job's own OOF and test logits were made with."""
        return resolve_tta(self.train)


@dataclass(frozen=True)
class FoldLogits:
    oof: np.ndarray  # (len(oof_keys), 18), in that order
    test: np.ndarray  # (eval images, 18), info.csv order


def load_fold_model(spec: Experiment, model_name: str, fold: int, weights_path: Path) -> FoldModel:
    """The model as the job built it, with `best.pt` loaded (no pretrained download: the
    weights come from the file)."""
    weights_path = Path(weights_path)
    model_spec = spec.model(model_name)
    train = spec.train_for(model_spec)
    if not weights_path.is_file():
        raise InferError(f"{model_name} fold {fold}: no saved weights at {weights_path}, nor in the job's Train "
                         "checkpoint (job.json). Is the job finished, and is its Train storage still there?")
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


def infer_test(spec: Experiment, model_name: str, fold: int, weights_path: Path, tta: Tta | None = None,
               dataset: Dataset | None = None) -> np.ndarray:
    """(eval images, 18) float32 logits in info.csv order, as the job's own test inference
    (`tta` None: the model's own)."""
    dataset = dataset or load_dataset(spec, verbose=False)
    return infer_rows(load_fold_model(spec, model_name, fold, weights_path), dataset.eval_cache, dataset.eval, tta)


def infer_rows(fm: FoldModel, cache, rows, tta: Tta | None = None) -> np.ndarray:
    """(len(rows), 18) float32 logits of a cache's rows (`rows.image_key`), in row order: the eval
    loader, the model's eval pipeline and TTA (`tta` None: the model's own), as for the eval
    images. `orchestrator.predict` runs new photos through here, so they go exactly the way the
    eval photos went."""
    return predict(fm.net, eval_loader(cache, rows, fm.train), fm.device, fm.norm, fm.tta if tta is None else tta)


def infer_fold(spec: Experiment, model_name: str, fold: int, weights_path: Path, oof_keys: list[str],
               tta: Tta | None = None, dataset: Dataset | None = None) -> FoldLogits:
    """The job's OOF logits (its held-out training photos `oof_keys`, in that order) and test
    logits, both with the same TTA (`tta` None: the model's own), so a blend fits on what it scores."""
    dataset = dataset or load_dataset(spec, verbose=False)
    fm = load_fold_model(spec, model_name, fold, weights_path)
    rows = dataset.train.set_index("image_key").loc[list(oof_keys)].reset_index()
    return FoldLogits(infer_rows(fm, dataset.train_cache, rows, tta), infer_rows(fm, dataset.eval_cache, dataset.eval, tta))
