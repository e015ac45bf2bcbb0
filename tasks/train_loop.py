"""The inner loops: device and precision, one training epoch, prediction with optional TTA."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from tasks.batches import mix_batch, to_device
from tasks.labels import NUM_CLASSES
from tasks.losses import Targets, total_loss
from tasks.model import logits18
from tasks.spec import TrainSpec

CUDA12_HINT = ("pip install torch==2.14.1 torchvision==0.29.1 --index-url "
               "https://download.pytorch.org/whl/cu126")


class DeviceError(RuntimeError):
    """The GPU cannot run this torch build, or the precision asked for."""


@dataclass(frozen=True)
class Device:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: full precision
    channels_last: bool

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move `model` onto this device in its memory format (channels-last if asked)."""
        return model.to(self.device, memory_format=torch.channels_last if self.channels_last
                        else torch.preserve_format)

    def scaler(self) -> torch.amp.GradScaler:
        # Loss scaling is only needed (and only enabled) for fp16.
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)


def check_cuda_arch(capability: tuple[int, int], arch_list: list[str], version: str) -> None:
    """Stop early when this torch build ships no kernels for the GPU (e.g. CUDA 13 on a V100)."""
    sm = f"sm_{capability[0]}{capability[1]}"
    if arch_list and sm not in arch_list:
        raise DeviceError(
            f"this GPU is {sm} but torch {version} was built only for {', '.join(arch_list)}. "
            f"CUDA 13 builds dropped Volta (V100, sm_70); install a CUDA 12 build: {CUDA12_HINT}")


def select_device(train: TrainSpec) -> Device:
    """CUDA when present (fp16 AMP by default), else CPU (full precision unless amp: bf16)."""
    if torch.cuda.is_available():
        check_cuda_arch(torch.cuda.get_device_capability(), torch.cuda.get_arch_list(), torch.__version__)
        dtype = {"auto": torch.float16, "fp16": torch.float16, "bf16": torch.bfloat16, "off": None}[train.amp]
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise DeviceError("train.amp: bf16 is not supported on this GPU (V100s have none); use fp16")
        # The current device, not plain "cuda": a launcher (Ray Train, torchrun) sets one per rank.
        return Device(torch.device("cuda", torch.cuda.current_device()), dtype, train.channels_last)
    dtype = {"auto": None, "off": None, "bf16": torch.bfloat16}.get(train.amp)
    if train.amp == "fp16":
        raise DeviceError("train.amp: fp16 needs a GPU; on CPU use bf16 or off")
    return Device(torch.device("cpu"), dtype, train.channels_last)


@dataclass(frozen=True)
class EpochStats:
    loss: float
    accuracy: float  # against the (unmixed) training label
    images: int
    seconds: float


def train_epoch(model, loader: DataLoader, optimizer, scheduler, scaler, dev: Device, train: TrainSpec,
                norm: tuple[torch.Tensor, torch.Tensor], weights, epoch: int, generator) -> EpochStats:
    model.train()
    started, total, correct, seen = time.monotonic(), 0.0, 0, 0
    updates = len(loader)
    for step, (images, labels, ages) in enumerate(loader):
        x = to_device(images, *norm, dev.device, dev.channels_last)
        labels, ages = labels.to(dev.device), ages.to(dev.device)
        x, targets = mix_batch(x, labels, ages, train.mix, generator)
        with dev.autocast():
            outputs = model(x)
        loss = total_loss(train, outputs, targets, weights)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step_update(num_updates=epoch * updates + step + 1)
        total += loss.item() * len(labels)
        correct += int((logits18(outputs).argmax(1) == labels).sum())
        seen += len(labels)
    return EpochStats(total / max(seen, 1), correct / max(seen, 1), seen, time.monotonic() - started)


@torch.no_grad()
def predict(model, loader: DataLoader, dev: Device, norm, flip_tta: bool) -> np.ndarray:
    """(N, 18) float32 logits in loader order; TTA averages with the mirrored image."""
    model.eval()
    out = []
    for images, _, _ in loader:
        x = to_device(images, *norm, dev.device, dev.channels_last)
        with dev.autocast():
            logits = logits18(model(x)).float()
            if flip_tta:
                logits = (logits + logits18(model(x.flip(3))).float()) / 2
        out.append(logits.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), np.float32)


def eval_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    logp = torch.log_softmax(torch.from_numpy(logits).float(), 1)
    return float(torch.nn.functional.nll_loss(logp, torch.tensor(labels).long()))
