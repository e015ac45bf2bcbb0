"""Predicting new photos: torch against the exported ONNX graphs, side by side in one run.

For a finished, blended experiment (default results/demo, from `python -m orchestrator.demo`):
the whole ensemble (every weighed fold model, flip TTA as set) over N of its eval photos, on CPU,
at batch 1 and batched (the eval loader's batch, train.batch_size * 2), both engines on the same
decoded photos and thread count, rounds alternating; then the time to the first prediction of a
fresh `python -m orchestrator.predict ONE_PHOTO` process (imports and model loading included),
torch against `--exported`. Prints a table of photos/s, the ratios ONNX / torch, the largest
probability difference between the two, and the load average (a shared machine's figures are noisy).

    python -m benchmarks.bench_predict [--results results/demo] [--photos 100] [--rounds 2] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from orchestrator.analysis.predictions.combine import blend_logits
from orchestrator.analysis.predictions.ensemble import load_ensemble
from orchestrator.analysis.predictions.exported import read_exported, write_exported
from tasks.log import silent
from tasks.serving.images import decode_photos
from tasks.serving.local import torch_logits
from tasks.serving.onnx_export import export_member
from tasks.serving.onnx_runner import onnx_logits
from tasks.serving.photos import folder_photos


def torch_batch1(members, photos) -> dict[str, np.ndarray]:
    """The torch path's own pieces (fold model, eval pipeline, TTA) with a loader of batch 1."""
    import pandas as pd

    from tasks.data.batches import CachedImages, Samples, make_loader
    from tasks.train.fold_models import load_fold_model
    from tasks.train.inference import predict

    out = {}
    for m in members:
        fm = load_fold_model(m.spec, m.spec_model, m.fold, m.weights)
        images = photos[m.decoding.key]
        rows = pd.DataFrame({"image_key": images.readable})
        data = CachedImages(Samples.of(images.cache, rows["image_key"], np.zeros(len(rows), np.int64),
                                       np.zeros(len(rows))), fm.train.augment.eval, fm.train.input_size)
        out[m.key] = predict(fm.net, make_loader(data, 1, 0, shuffle=False), fm.device, fm.norm, fm.train.tta_flip)
    return out


def timed(run) -> tuple[float, dict]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def first_prediction(photo: str, engine_args: list[str], out: Path) -> float:
    """Seconds from a fresh process's start to its written prediction of one photo."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "orchestrator.predict", photo, *engine_args, "--out", str(out)],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"predict {engine_args} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results/demo"))
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="per engine (torch and each onnxruntime session)")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    ensemble = load_ensemble(args.results)
    spec = ensemble.members[0].spec
    paths = folder_photos(spec.data.root / "eval" / "images")[:args.photos]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_s, _ = timed(lambda: write_exported(ensemble, tmp / "exported", export_member, silent))
        onnx_ensemble = read_exported(tmp / "exported")
        photos = {m.decoding.key: decode_photos(paths, m.decoding, tmp, silent) for m in ensemble.members}
        batch = spec.train.batch_size * 2
        runs = {("torch", "batch 1"): lambda: torch_batch1(ensemble.members, photos),
                ("torch", f"batch {batch}"): lambda: torch_logits(ensemble.members, photos, silent),
                ("onnx", "batch 1"): lambda: onnx_logits(onnx_ensemble.members, photos, silent, 1, args.threads),
                ("onnx", f"batch {batch}"): lambda: onnx_logits(onnx_ensemble.members, photos, silent, batch,
                                                                args.threads)}
        seconds: dict = {k: [] for k in runs}
        outputs: dict = {}
        for _ in range(args.rounds):
            for key, run in runs.items():  # alternating: drift in the machine's load hits both
                s, outputs[key] = timed(run)
                seconds[key].append(s)
        difference = np.abs(blend_logits(ensemble, outputs[("torch", f"batch {batch}")], len(paths)).probs
                            - blend_logits(onnx_ensemble, outputs[("onnx", f"batch {batch}")], len(paths)).probs).max()
        first = {"torch": [], "onnx": []}
        for _ in range(args.rounds):
            first["torch"].append(first_prediction(paths[0], ["--results", str(args.results)], tmp / "t.csv"))
            first["onnx"].append(first_prediction(paths[0], ["--exported", str(tmp / "exported")], tmp / "o.csv"))
    rate = {k: len(paths) / statistics.median(v) for k, v in seconds.items()}
    print(f"{len(ensemble.members)} fold models ({ensemble.method} of {', '.join(ensemble.weighted())}), "
          f"{len(paths)} photos, {args.threads} thread(s) per engine, CPU, median of {args.rounds} rounds; "
          f"export took {export_s:.1f}s")
    print(f"{'':28s} {'torch':>10s} {'ONNX':>10s} {'ONNX/torch':>11s}")
    for label in ("batch 1", f"batch {batch}"):
        t, o = rate[("torch", label)], rate[("onnx", label)]
        print(f"{'photos/s, ' + label:28s} {t:10.1f} {o:10.1f} {o / t:10.2f}x")
    t, o = statistics.median(first["torch"]), statistics.median(first["onnx"])
    print(f"{'first prediction (s)':28s} {t:10.2f} {o:10.2f} {o / t:10.2f}x   (a fresh process, imports and load)")
    print(f"largest probability difference ONNX - torch: {difference:.1e}")
    print(f"load average: {' '.join(f'{v:.1f}' for v in load_start)} at the start, "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
