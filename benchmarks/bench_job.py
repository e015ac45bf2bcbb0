"""Training throughput of the job's loop vs a bare forward/backward loop, same model and batches.

    python -m benchmarks.bench_job [--backbone resnet18] [--size 128x96] [--batches 20] [--rounds 3]

(bare) batches pre-made in memory, already normalised: model forward, loss, backward, step.
(job)  tasks.train.loop.train_epoch over a real loader from the decode-once cache with the
       job's augmentation, sampler, mixing, soft-target losses, lr schedule and metrics.
Both start from the same weights, run interleaved `--rounds` times in one process; the
table gives images/s and the ratio job/bare (target >= 0.9: data, logging and metrics
cost at most 10%).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from tasks.data.batches import CachedImages, make_loader, to_device
from tasks.data.cache import ensure_cache
from tasks.data.dataset import index_train
from tasks.job import make_scheduler
from tasks.spec.experiment import ModelSpec, TrainSpec
from tasks.synth.write import parse_size, write_synth
from tasks.train.device import select_device
from tasks.train.inference import ModelContext
from tasks.train.loop import Fitting, train_epoch
from tasks.train.losses import class_weights
from tasks.train.model import build_model


def bare_loop(model, optimizer, batches) -> float:
    model.train()
    started = time.perf_counter()
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(x)["class"], y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return sum(len(y) for _, y in batches) / (time.perf_counter() - started)


def job_loop(model, optimizer, loader, train: TrainSpec, norm, epoch: int) -> float:
    dev = select_device(train)
    scheduler = make_scheduler(optimizer, train, len(loader))
    weights = class_weights(torch.arange(18))
    fit = Fitting(ModelContext(model, dev, norm, train), model, optimizer, scheduler, dev.scaler(), weights)
    stats = train_epoch(fit, loader, epoch, torch.Generator().manual_seed(epoch))
    return stats.images / stats.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=parse_size, default=(96, 128), help="input W x H")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    size = (args.size[1], args.size[0])
    train = TrainSpec(input_size=size, batch_size=args.batch_size, loader_workers=0, channels_last=False,
                      mix={"name": "vstrip", "prob": 0.5})
    persons = args.batches * args.batch_size // 7 + 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_synth(root, persons=persons, seed=0, size=args.size, eval_persons=8, workers=1)
        images = index_train(root).images.head(args.batches * args.batch_size)
        cache = ensure_cache(root, list(images["image_key"]), list(images["path"]), size, Path(tmp) / "cache")
        data = CachedImages(cache, cache.rows(images["image_key"]), images["label"].to_numpy(),
                            images["age"].to_numpy(), train.augment.train, size)
        torch.manual_seed(0)
        model = build_model(ModelSpec(backbone=args.backbone), train)
        from timm.data import resolve_data_config

        config = resolve_data_config({}, model=model.body)
        norm = tuple(torch.tensor(config[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
        batches = [(to_device(x, *norm, torch.device("cpu"), False), y.long()) for x, y, _ in
                   make_loader(data, args.batch_size, 0, shuffle=True, seed=0)]
        start_model = copy.deepcopy(model.state_dict())
        rates = {"bare": [], "job": []}
        for r in range(args.rounds):
            for name in rates:
                model.load_state_dict(start_model)
                optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
                loader = make_loader(data, args.batch_size, 0, shuffle=True, seed=r)
                rate = bare_loop(model, optimizer, batches) if name == "bare" else \
                    job_loop(model, optimizer, loader, train, norm, r)
                rates[name].append(rate)
    bare, job = (statistics.median(rates[k]) for k in ("bare", "job"))
    print(f"\n{args.backbone} at {args.size[0]}x{args.size[1]}, batch {args.batch_size}, {args.batches} batches, "
          f"{args.rounds} rounds, torch threads {torch.get_num_threads()}")
    print("| loop | images/s (median) | min..max | vs bare |\n|---|---:|---:|---:|")
    for name in rates:
        median = statistics.median(rates[name])
        print(f"| {name} | {median:.1f} | {min(rates[name]):.1f}..{max(rates[name]):.1f} | {median / bare:.2f} |")
    print(f"job/bare = {job / bare:.2f} (target >= 0.90)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
