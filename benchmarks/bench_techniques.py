"""What a train technique buys on answers it never saw: eval and OOF macro F1 against the same
spec without it, and what it costs in time.

Each draw is a synthetic dataset of its own (`tasks.synth --seed S`, eval answers known) run with
experiments/demo.yaml's settings and one of its models (test_convnext), seed = folds.seed = S,
3 folds; jobs run as plain functions (tasks.job.train_job, no Ray) on one torch thread, and a
variant's finished jobs are reused by a later run. The baseline is demo.yaml as it is (flip TTA).

  tta         no retraining: the baseline's fold models re-infer their OOF and test logits with
              each TTA (tasks.train.fold_models.infer_fold), paired on the same weights
  ema         train.ema={decay: 0.99}
  grad_accum  train.grad_accum=2 (an optimiser step every 2 batches of 16, the same lr)
  clip_grad   train.clip_grad=1.0

Eval macro F1: the mean of the 3 fold models' probabilities on the eval photos. OOF macro F1:
the fold models' held-out photos against the given labels. A job's seconds depend on the load of
the moment; `--timing` instead times one training epoch (fold 0 of the first draw) with and
without the technique, interleaved in one process.

    python -m benchmarks.bench_techniques TECHNIQUE [--seeds 0 1 2] [--persons 150] [--timing]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.metrics import f1_score

from tasks.data.preparation import load_dataset, prepare
from tasks.job import fit_samples, make_scheduler, split_fold, train_job
from tasks.job_io import Job, JobResult, planned_jobs, unfinished_reason
from tasks.logits import read_logits
from tasks.spec.load import load_spec
from tasks.spec.techniques import parse_tta
from tasks.synth.write import write_synth

DEMO_SPEC = Path("experiments/demo.yaml")
TRAINED = {"ema": ["train.ema={decay: 0.99}"], "grad_accum": ["train.grad_accum=2"], "clip_grad": ["train.clip_grad=1.0"]}
TTAS = ("none", "hflip", "hflip,scale", "hflip,five_crop")  # hflip: the baseline's own


def draw(seed: int, persons: int, root: Path, name: str, overrides: list[str]):
    data = root / f"data_s{seed}_p{persons}"
    if not (data / "train").exists():
        write_synth(data, persons=persons, eval_persons=persons, seed=seed, size=(48, 64))
    spec = load_spec(DEMO_SPEC, [f"data.root={data}", f"seed={seed}", f"folds.seed={seed}", f"results_dir={root}",
                                 f"name={name}_s{seed}", f"data.cache_dir={root / 'cache'}",
                                 "models=[{backbone: test_convnext}]", *overrides])
    return spec, data


def run_jobs(spec) -> tuple[list[Path], float]:
    """Every fold job of the spec, trained unless finished; their folders and training seconds."""
    dataset = prepare(spec, verbose=False)
    from tasks.data.preparation import rows_hash

    dirs, seconds = [], 0.0
    for planned in planned_jobs(spec, rows_hash(spec, dataset)):
        if unfinished_reason(planned.out_dir):
            train_job(spec, Job(planned.model, planned.fold, planned.out_dir), dataset=dataset, log=lambda s: None)
        dirs.append(planned.out_dir)
        seconds += JobResult.read(planned.out_dir).seconds
    return dirs, seconds


def scores(oof: list[tuple[np.ndarray, np.ndarray]], test: list[np.ndarray], eval_truth: np.ndarray) -> dict:
    """OOF macro F1 over the folds' held-out rows, eval macro F1 of the folds' mean probabilities."""
    targets = np.concatenate([t for t, _ in oof])
    logits = np.concatenate([lg for _, lg in oof])
    probs = sum(torch.softmax(torch.from_numpy(np.array(t)), 1).numpy() for t in test) / len(test)
    return {"oof": f1_score(targets, logits.argmax(1), average="macro"),
            "eval": f1_score(eval_truth, probs.argmax(1), average="macro")}


def saved_scores(dirs: list[Path], eval_truth: np.ndarray) -> dict:
    oof = [read_logits(d / "oof.parquet") for d in dirs]
    test = [read_logits(d / "test.parquet")[1] for d in dirs]
    return scores([(f["target"].to_numpy(dtype=int), lg) for f, lg, _ in oof], test, eval_truth)


def eval_answers(spec, data: Path) -> np.ndarray:
    truth = pd.read_csv(data / "truth" / "eval_answers.csv").set_index("ImageID")["ans"]
    return truth.loc[load_dataset(spec, verbose=False).eval["image_key"]].to_numpy()


def measure_trained(technique: str, seed: int, persons: int, root: Path) -> dict:
    base, data = draw(seed, persons, root, "base", [])
    variant, _ = draw(seed, persons, root, technique, TRAINED[technique])
    truth = eval_answers(base, data)
    base_dirs, base_seconds = run_jobs(base)
    dirs, seconds = run_jobs(variant)
    a, b = saved_scores(base_dirs, truth), saved_scores(dirs, truth)
    return {"technique": technique, "seed": seed, "base_eval": a["eval"], "eval": b["eval"], "base_oof": a["oof"],
            "oof": b["oof"], "base_seconds": base_seconds, "seconds": seconds}


def measure_tta(seed: int, persons: int, root: Path) -> list[dict]:
    from tasks.train.fold_models import infer_fold

    base, data = draw(seed, persons, root, "base", [])
    truth = eval_answers(base, data)
    dirs, _ = run_jobs(base)
    dataset = load_dataset(base, verbose=False)
    train = base.train_for(base.models[0])
    held = [split_fold(dataset, base, JobResult.read(d).fold, train)[1] for d in dirs]
    out = {}
    for text in TTAS:
        tta, started = parse_tta(text), time.perf_counter()
        logits = [infer_fold(base, "test_convnext", JobResult.read(d).fold, d / "best.pt",
                             rows["image_key"].tolist(), tta, dataset) for d, rows in zip(dirs, held)]
        seconds = time.perf_counter() - started
        out[text] = (scores([(rows["label"].to_numpy(), lg.oof) for rows, lg in zip(held, logits)],
                            [lg.test for lg in logits], truth), seconds)
    (ref, ref_seconds) = out["hflip"]
    return [{"technique": f"tta {text}", "seed": seed, "base_eval": ref["eval"], "eval": s["eval"],
             "base_oof": ref["oof"], "oof": s["oof"], "base_seconds": ref_seconds, "seconds": sec}
            for text, (s, sec) in out.items() if text != "hflip"]


def summary(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for technique, part in table.groupby("technique", sort=False):
        gain = part["eval"] - part["base_eval"]
        half = stats.t.ppf(0.975, len(gain) - 1) * gain.std(ddof=1) / np.sqrt(len(gain)) if len(gain) > 1 else np.nan
        rows.append({"technique": technique, "draws": len(part), "eval_gain_mean": gain.mean(),
                     "eval_gain_min": gain.min(), "eval_gain_max": gain.max(), "t95_low": gain.mean() - half,
                     "t95_high": gain.mean() + half, "oof_gain_mean": (part["oof"] - part["base_oof"]).mean(),
                     "time_ratio": part["seconds"].sum() / part["base_seconds"].sum()})
    return pd.DataFrame(rows)


def epoch_fitting(spec, dataset, root: Path):
    """The job's own fitting of fold 0 (tasks.job's pieces) and its first epoch's loader."""
    from timm.optim import create_optimizer_v2

    from tasks.data.batches import CachedImages, make_loader
    from tasks.train.device import select_device
    from tasks.train.inference import model_context
    from tasks.train.loop import Fitting, make_ema, optimizer_steps
    from tasks.train.losses import class_weights
    from tasks.train.model import build_model

    train = spec.train_for(spec.models[0])
    fit_rows, _ = split_fold(dataset, spec, 0, train)
    samples = fit_samples(spec, Job("test_convnext", 0, root), dataset, fit_rows, log=lambda s: None)
    loader = make_loader(CachedImages(samples, train.augment.train, train.input_size), train.batch_size,
                         train.loader_workers, shuffle=True, seed=0)
    torch.manual_seed(0)
    model = build_model(spec.models[0], train)
    dev = select_device(train)
    dev.place(model)
    o = train.optimizer
    optimizer = create_optimizer_v2(model, opt=o.name, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum)
    scheduler = make_scheduler(optimizer, train, optimizer_steps(len(loader), train.grad_accum))
    fit = Fitting(model_context(model, dev, train), model, optimizer, scheduler, dev.scaler(),
                  class_weights(torch.tensor(fit_rows["train_label"].to_numpy())), make_ema(model, train))
    return fit, loader


def time_epochs(technique: str, persons: int, root: Path, rounds: int = 3) -> None:
    from tasks.train.loop import train_epoch

    specs = [draw(0, persons, root, name, overrides)[0] for name, overrides in (("base", []),
                                                                              (technique, TRAINED[technique]))]
    dataset = prepare(specs[0], verbose=False)
    fits = [epoch_fitting(spec, dataset, root) for spec in specs]
    seconds = [[], []]
    for r in range(rounds):
        for i, (fit, loader) in enumerate(fits):
            seconds[i].append(train_epoch(fit, loader, r, torch.Generator().manual_seed(r)).seconds)
    base, other = (float(np.median(s)) for s in seconds)
    print(f"{technique}: one epoch {base:.2f}s without, {other:.2f}s with (median of {rounds}, interleaved): "
          f"{other / base:.2f}x; load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("technique", choices=["tta", *TRAINED])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--persons", type=int, default=150, help="training people; as many eval people")
    parser.add_argument("--root", type=Path, default=Path("results/bench_techniques"))
    parser.add_argument("--timing", action="store_true", help="time one epoch with and without it, interleaved")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: a second thread mostly waits (tests/conftest.py)
    if args.timing:
        if args.technique == "tta":
            parser.error("--timing is for trained techniques; the tta table already times inference back to back")
        return time_epochs(args.technique, args.persons, args.root)
    print(f"load average at the start: {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for seed in args.seeds:
        rows += (measure_tta(seed, args.persons, args.root) if args.technique == "tta"
                 else [measure_trained(args.technique, seed, args.persons, args.root)])
        print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    args.root.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.root / f"{args.technique}.csv", index=False)
    pd.set_option("display.width", 200)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(summary(table).to_string(index=False, float_format=lambda v: f"{v:+.4f}"))
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (times measured beside other work are noisy)")


if __name__ == "__main__":
    main()
