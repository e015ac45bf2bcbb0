"""Data-parallel scaling of the job's training loop: one worker vs two DDP ranks (gloo, CPU).

    python -m benchmarks.bench_ddp [--backbone resnet18] [--size 96x128] [--epochs 2] [--rounds 3]

On CPU a "worker" is a process with its own core (torch pinned to 1 thread), standing in for
a worker with its own GPU. Every variant runs tasks.train.loop.train_epoch over the job's
real loader (decode-once cache, augmentation, EpochSampler shares) from the same weights,
`train.batch_size` per worker as in a job:

(1 thread)  one worker on one core: a job with workers_per_job: 1;
(2 threads) one worker with both cores: what one process gets from a second core alone;
(DDP x2)    two ranks of one core each, wrapped in DistributedDataParallel: workers_per_job: 2.

Variants are interleaved `--rounds` times; the first epoch of each run is a warm-up and is not
timed. The table gives images/s (all ranks together) and the ratios. Target: DDP x2 >= 1.6x
of (1 thread), i.e. at least 80% scaling efficiency on 2 workers.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tasks.data.batches import CachedImages, make_loader
from tasks.data.cache import ensure_cache
from tasks.data.dataset import index_train
from tasks.job import make_scheduler
from tasks.spec.experiment import ModelSpec, TrainSpec
from tasks.synth.write import parse_size, write_synth
from tasks.train.device import select_device
from tasks.train.distributed import current_ranks, sum_over_ranks, wrap_model
from tasks.train.inference import ModelContext
from tasks.train.loop import Fitting, train_epoch
from tasks.train.losses import class_weights
from tasks.train.model import build_model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_worker(rank: int, world: int, port: int, threads: int, setup: dict, out: str) -> None:
    """One worker (or rank): `epochs` epochs; writes timed images/s of all ranks together."""
    torch.set_num_threads(threads)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    ranks = current_ranks()
    train = TrainSpec.model_validate(setup["train"])
    cache = ensure_cache(Path(setup["root"]), setup["keys"], [Path(p) for p in setup["paths"]], train.input_size,
                         Path(setup["cache"]))
    data = CachedImages(cache, cache.rows(setup["keys"]), np.asarray(setup["labels"]), np.asarray(setup["ages"]),
                        train.augment.train, train.input_size)
    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone=setup["backbone"]), train)
    dev = select_device(train)
    norm = (torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    net = wrap_model(model, dev.device, ranks)
    weights = class_weights(torch.arange(18))
    rates = []
    for epoch in range(setup["epochs"] + 1):  # epoch 0 warms up
        loader = make_loader(data, train.batch_size, 0, shuffle=True, seed=epoch, ranks=ranks)
        scheduler = make_scheduler(optimizer, train, len(loader))
        fit = Fitting(ModelContext(model, dev, norm, train, ranks), net, optimizer, scheduler, dev.scaler(), weights)
        stats = train_epoch(fit, loader, epoch, torch.Generator().manual_seed(epoch + 7919 * ranks.rank))
        images, seconds = sum_over_ranks([stats.images, stats.seconds], ranks)
        if epoch:
            rates.append(images / (seconds / ranks.world))
    if ranks.leader:
        Path(out).write_text(json.dumps(rates))
    if world > 1:
        dist.destroy_process_group()


def measure(world: int, threads: int, setup: dict, tmp: Path) -> list[float]:
    out = tmp / f"rates-{world}-{threads}-{time.monotonic_ns()}.json"
    mp.spawn(run_worker, args=(world, _free_port(), threads, setup, str(out)), nprocs=world, join=True)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=parse_size, default=(96, 128), help="input W x H")
    parser.add_argument("--batch-size", type=int, default=32, help="per worker")
    parser.add_argument("--images", type=int, default=384, help="training images per epoch (all ranks)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per run, after one warm-up")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    size = (args.size[1], args.size[0])
    train = TrainSpec(input_size=size, batch_size=args.batch_size, loader_workers=0, channels_last=False,
                      mix={"name": "vstrip", "prob": 0.5})
    variants = {"(1 thread) one worker, one core": (1, 1), "(2 threads) one worker, both cores": (1, 2),
                "(DDP x2) two ranks, one core each": (2, 1)}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_synth(root, persons=args.images // 7 + 1, seed=0, size=args.size, eval_persons=8, workers=1)
        images = index_train(root).images.head(args.images)
        setup = {"root": str(root), "keys": list(images["image_key"]), "paths": [str(p) for p in images["path"]],
                 "labels": images["label"].tolist(), "ages": images["age"].tolist(), "cache": str(Path(tmp) / "cache"),
                 "train": train.model_dump(mode="json"), "backbone": args.backbone, "epochs": args.epochs}
        for round_ in range(args.rounds):
            for name, (world, threads) in variants.items():
                rates[name] += measure(world, threads, setup, Path(tmp))
                print(f"round {round_ + 1}/{args.rounds} {name}: {statistics.median(rates[name][-args.epochs:]):.1f} "
                      f"images/s, load {os.getloadavg()[0]:.1f}", flush=True)
    base = statistics.median(rates["(1 thread) one worker, one core"])
    print(f"\n{args.backbone} at {args.size[0]}x{args.size[1]}, batch {args.batch_size} per worker, "
          f"{args.images} images per epoch, {args.epochs} timed epochs x {args.rounds} rounds per variant\n")
    print("| variant | images/s (median) | min..max | vs 1 thread |\n|---|---:|---:|---:|")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {min(values):.1f}..{max(values):.1f} | {median / base:.2f}x |")
    ddp = statistics.median(rates["(DDP x2) two ranks, one core each"]) / base
    print(f"\nDDP x2 scaling: {ddp:.2f}x of one worker ({ddp / 2:.0%} efficiency); target >= 1.6x: "
          f"{'met' if ddp >= 1.6 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
