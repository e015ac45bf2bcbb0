"""Images/s delivered to the training loop: per-epoch JPEG decoding vs the decode-once cache.

    python -m benchmarks.bench_data [--persons 60] [--size 384x512] [--train-size 224x168] [--rounds 3]

Writes a real-size synthetic dataset (the competition's 384x512 JPEGs), then times one
pass over every training image through the same albumentations augmentation, fed
(a) by decoding each file as the usual competition code does every epoch (PIL, full decode,
resize), (a') the same with PIL's JPEG draft mode, and (b) from the memory-mapped cache.
The variants run interleaved, `--rounds` times, in one process: ratios, not lone times.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from tasks.data.batches import CachedImages
from tasks.data.cache import decode, ensure_cache
from tasks.data.dataset import index_train
from tasks.spec.augment import DEFAULT_TRAIN, build_pipeline
from tasks.synth.write import parse_size, write_synth


class DecodingImages(Dataset):
    """What the usual competition code does: open, decode and resize the file every epoch."""

    def __init__(self, root: Path, paths: list[str], size: tuple[int, int], draft: bool):
        import albumentations as A

        self.root, self.paths, self.size, self.draft = root, paths, size, draft
        self.pipeline = A.Compose([build_pipeline(DEFAULT_TRAIN), A.Resize(*size)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.root / self.paths[i]
        if self.draft:
            image = decode(path, self.size)
        else:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB").resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR))
        return torch.tensor(self.pipeline(image=image)["image"]), 0, 0.0


def images_per_second(data: Dataset, workers: int) -> float:
    loader = DataLoader(data, batch_size=32, shuffle=True, num_workers=workers)
    started, seen = time.perf_counter(), 0
    for images, _, _ in loader:
        seen += len(images)
    return seen / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=60)
    parser.add_argument("--size", type=parse_size, default=(384, 512), help="file size W x H")
    parser.add_argument("--train-size", type=parse_size, default=(168, 224), help="training size W x H")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    args = parser.parse_args(argv)
    size = (args.train_size[1], args.train_size[0])  # (H, W)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_synth(root, persons=args.persons, seed=0, size=args.size, eval_persons=8, workers=1)
        images = index_train(root).images
        cache = ensure_cache(root, list(images["image_key"]), list(images["path"]), size, Path(tmp) / "cache")
        rows = cache.rows(images["image_key"])
        variants = {
            "(a) decode every epoch": DecodingImages(root, list(images["path"]), size, draft=False),
            "(a') decode, JPEG draft": DecodingImages(root, list(images["path"]), size, draft=True),
            "(b) decode-once cache": CachedImages(cache, rows, np.zeros(len(rows)), np.zeros(len(rows)),
                                                  DEFAULT_TRAIN, size),
        }
        rates: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for name, data in variants.items():
                rates[name].append(images_per_second(data, args.workers))
    base = statistics.median(rates["(a) decode every epoch"])
    print(f"\n{len(images)} images of {args.size[0]}x{args.size[1]} -> {size[1]}x{size[0]}, "
          f"{args.rounds} rounds, {args.workers} loader workers, torch threads {torch.get_num_threads()}")
    print("| source | images/s (median) | min..max | vs (a) |\n|---|---:|---:|---:|")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.0f} | {min(values):.0f}..{max(values):.0f} | {median / base:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
