"""Where a job's tensors live: the device, its precision (AMP) and memory format."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from tasks.spec.experiment import TrainSpec

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
