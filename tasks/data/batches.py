"""Batches from the decode-once cache: augmentation, sampling, normalisation and mixing.

Images stay uint8 until they reach the device, where they are normalised in one tensor op:
cheaper than per-image float conversion in the loader, and the same on CPU and GPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tasks.spec.augment import MixSpec, Pipeline, image_pipeline
from tasks.data.cache import ImageCache
from tasks.train.distributed import EpochSampler, Ranks
from tasks.labels import NUM_CLASSES
from tasks.train.losses import Targets


@dataclass(frozen=True)
class Samples:
    """Rows of one or more caches (the training photos, and eval photos with pseudo labels)
    with what training needs of each: a target distribution, the age and a loss weight."""

    arrays: tuple[Path, ...]  # the caches' array files
    which: np.ndarray  # (N,) index into arrays
    rows: np.ndarray  # (N,) row in its cache
    targets: np.ndarray  # (N, 18) float32 probability vectors
    ages: np.ndarray  # (N,) float32; NaN where unknown (pseudo rows)
    weights: np.ndarray  # (N,) float32 loss weights

    @classmethod
    def of(cls, cache: ImageCache, keys, targets: np.ndarray, ages: np.ndarray, weight: float = 1.0) -> "Samples":
        """Rows `keys` of one cache; `targets` as class indices (N,) or probabilities (N, 18)."""
        targets = np.asarray(targets)
        if targets.ndim == 1:
            targets = np.eye(NUM_CLASSES, dtype=np.float32)[targets.astype(np.int64)]
        n = len(targets)
        return cls((cache.array_path,), np.zeros(n, np.int64), cache.rows(keys), targets.astype(np.float32),
                   np.asarray(ages, np.float32), np.full(n, weight, np.float32))

    def plus(self, other: "Samples") -> "Samples":
        return Samples(self.arrays + other.arrays, np.concatenate([self.which, other.which + len(self.arrays)]),
                       *(np.concatenate([a, b]) for a, b in ((self.rows, other.rows), (self.targets, other.targets),
                                                              (self.ages, other.ages),
                                                              (self.weights, other.weights))))

    @property
    def labels(self) -> np.ndarray:
        """Each row's most likely class: the label of a hard target."""
        return self.targets.argmax(1)


class CachedImages(Dataset):
    """Samples from memory-mapped caches, augmented; opened lazily so workers map them themselves.
    An item: (uint8 HWC image, 18 target probabilities, age, loss weight)."""

    def __init__(self, samples: Samples, steps: Pipeline, size: tuple[int, int]):
        self.samples = samples
        self.pipeline = image_pipeline(steps, size)
        self.arrays: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.samples.rows)

    def __getitem__(self, i: int):
        s = self.samples
        if self.arrays is None:
            self.arrays = [np.load(path, mmap_mode="r") for path in s.arrays]
        image = self.pipeline(image=np.asarray(self.arrays[s.which[i]][s.rows[i]]))["image"]
        # copies: the map is read-only
        return torch.tensor(image), torch.from_numpy(s.targets[i].copy()), float(s.ages[i]), float(s.weights[i])

    def reseed(self, seed: int) -> None:
        self.pipeline.set_random_seed(seed)


def _seed_worker(worker_id: int) -> None:
    # Each worker's augmentations follow from the loader's per-epoch generator: resumable.
    info = torch.utils.data.get_worker_info()
    info.dataset.reseed(int(torch.initial_seed() % 2**31))


def make_loader(data: CachedImages, batch_size: int, workers: int, shuffle: bool,
                sample_weights: np.ndarray | None = None, seed: int = 0, ranks: Ranks = Ranks()) -> DataLoader:
    """Shuffled (or weighted) batches of this rank's share of the epoch, or all rows in order."""
    sampler = EpochSampler(len(data), sample_weights, seed, ranks) if shuffle else None
    # Augmentation seeds differ per rank; the epoch's draw (the sampler's seed) does not.
    aug_seed = seed + 7919 * ranks.rank
    data.reseed(aug_seed)
    count = len(sampler) if sampler is not None else len(data)
    return DataLoader(data, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      generator=torch.Generator().manual_seed(aug_seed), worker_init_fn=_seed_worker,
                      drop_last=shuffle and count > batch_size, persistent_workers=False,
                      pin_memory=torch.cuda.is_available())


def sample_weights(labels: np.ndarray, bands: np.ndarray, how: str) -> np.ndarray | None:
    """`weighted`: every class equally likely; `oversample_old`: the old band as common as
    the average of the other two bands."""
    if how == "none":
        return None
    if how == "weighted":
        counts = np.bincount(labels, minlength=NUM_CLASSES).astype(float)
        return 1.0 / counts[labels]
    band_counts = np.bincount(bands, minlength=3).astype(float)
    boost = band_counts[:2].mean() / max(band_counts[2], 1.0)
    return np.where(bands == 2, max(boost, 1.0), 1.0)


def to_device(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, device: torch.device,
              channels_last: bool) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW on the device."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


# CutMix/MixUp are written here rather than taken from timm's `Mixup`: timm draws from the
# global np.random, which no checkpoint holds, so a job resumed mid-run would mix differently
# from one never stopped. Every draw here comes from the epoch's own seeded generator.
def mix_batch(x: torch.Tensor, targets: Targets, mix: MixSpec, generator: torch.Generator) -> tuple[torch.Tensor, Targets]:
    """Maybe mix the batch with its reverse; targets, ages and weights follow the mixed area."""
    if mix.name == "none" or torch.rand((), generator=generator).item() >= mix.prob:
        return x, targets
    lam = _mix_images(x, mix, generator)

    def blend(t: torch.Tensor) -> torch.Tensor:
        return lam * t + (1 - lam) * t.flip(0)

    return x, Targets(blend(targets.soft), blend(targets.age), blend(targets.weights()))


def _mix_images(x: torch.Tensor, mix: MixSpec, generator: torch.Generator) -> float:
    """Mix `x` in place with x.flip(0); returns the share of the original image."""
    height, width = x.shape[2], x.shape[3]
    other = x.flip(0)
    if mix.name == "vstrip":
        low, high = mix.strip_ratio
        cut = int(round(width * (low + (high - low) * torch.rand((), generator=generator).item())))
        x[:, :, :, cut:] = other[:, :, :, cut:]
        return cut / width
    # torch's Beta sampler takes no generator: seed a numpy one from ours instead.
    seed = int(torch.randint(2**62, (), generator=generator))
    lam = float(np.random.default_rng(seed).beta(mix.alpha, mix.alpha))
    if mix.name == "mixup":
        x.mul_(lam).add_(other, alpha=1 - lam)
        return lam
    # cutmix: a box of area (1 - lam), clipped at the borders; lam corrected to the real area.
    cut_h, cut_w = int(height * (1 - lam) ** 0.5), int(width * (1 - lam) ** 0.5)
    cy = int(torch.randint(height, (), generator=generator))
    cx = int(torch.randint(width, (), generator=generator))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    x[:, :, y0:y1, x0:x1] = other[:, :, y0:y1, x0:x1]
    return 1 - (y1 - y0) * (x1 - x0) / (height * width)
