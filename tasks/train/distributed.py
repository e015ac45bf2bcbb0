"""Data-parallel training of one job across workers, when a process group is running.

The job itself never starts a process group: whoever launches the workers does (Ray Train
with more than one worker per job, or torchrun). With none, or a world of one, everything
here is the identity and a job runs as a plain single process.

Every rank draws the same epoch order from the shared seed and takes its own round-robin
share, so the union of the ranks' batches is one epoch's draw. Evaluation is sharded the
same way and gathered back into row order on every rank, so every rank sees the same
validation F1 and takes the same early-stopping decisions (a rank that stopped alone would
leave the others waiting forever in the next gradient all-reduce).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @property
    def leader(self) -> bool:
        """Rank 0 alone writes the job's files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def current_ranks() -> Ranks:
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


class EpochSampler(Sampler[int]):
    """This rank's share of one epoch's draw: a permutation, or `weights`-proportional draws
    with replacement. Padded by wrapping around so that every rank gets as many indices
    (and so as many optimiser steps) as the others. torch's DistributedSampler has no weights.
    """

    def __init__(self, size: int, weights: np.ndarray | None, seed: int, ranks: Ranks):
        self.size, self.seed, self.ranks = size, seed, ranks
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.per_rank = math.ceil(size / ranks.world) if size else 0

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        if self.weights is None:
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=generator)
        padded = order.repeat(math.ceil(self.per_rank * self.ranks.world / max(self.size, 1)))
        return iter(padded[: self.per_rank * self.ranks.world][self.ranks.rank::self.ranks.world].tolist())

    def __len__(self) -> int:
        return self.per_rank


def wrap_model(model: torch.nn.Module, device: torch.device, ranks: Ranks) -> torch.nn.Module:
    """DDP for training when distributed; `model` itself stays the thing to save and evaluate."""
    if not ranks.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sync_buffers(model: torch.nn.Module, ranks: Ranks) -> None:
    """Rank 0's BatchNorm statistics everywhere: after the last step each rank's differ by its
    own last batch, and evaluation must use one model."""
    if ranks.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def gather_rows(part: np.ndarray, ranks: Ranks) -> np.ndarray:
    """Reassemble rows sharded as rows[rank::world] into their original order, on every rank."""
    if not ranks.distributed:
        return part
    parts: list = [None] * ranks.world
    dist.all_gather_object(parts, part)
    whole = np.empty((sum(len(p) for p in parts), *part.shape[1:]), dtype=part.dtype)
    for rank, rows in enumerate(parts):
        whole[rank::ranks.world] = rows
    return whole


def sum_over_ranks(values: list[float], ranks: Ranks) -> list[float]:
    if not ranks.distributed:
        return values
    # NCCL reduces CUDA tensors only; gloo CPU ones.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()
