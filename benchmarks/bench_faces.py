"""Prepare's cost of the face crop per 1,000 photos at 384x512: none, a boxes file, the detector.

    python -m benchmarks.bench_faces [--persons 86] [--rounds 1] [--workers 0]

Writes a real-size synthetic dataset (86 training and 57 eval people: 1,001 photos), then
builds the decode-once cache (what prepare spends its time on) three ways, each into an
empty cache folder: (a) no data.face, (b) data.face with the synth's truth/face_boxes.csv
and detector none (the crop alone), (c) data.face.detector=haar on every photo. The variants
run in one process, interleaved `--rounds` times: read the ratios, not the lone times.
It also prints the Haar detector's hit rate on the synthetic faces (drawn, not photographed:
expect it low; the real photo's rate is in tests/test_faces.py).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from tasks.cache import ensure_cache
from tasks.dataset import index_eval, index_train
from tasks.face_boxes import read_boxes
from tasks.face_spec import FaceSpec
from tasks.faces import face_crop
from tasks.synth import write_synth

VARIANTS = ("no crop", "crop from boxes file", "crop + Haar detector")


def build(root: Path, frames, crop, cache: Path, workers: int) -> tuple[float, list]:
    started = time.perf_counter()
    caches = [ensure_cache(root, list(f["image_key"]), list(f["path"]), (128, 96), cache, workers, label, crop)
              for f, label in zip(frames, ("train", "eval"))]
    return time.perf_counter() - started, caches


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_faces", description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=86)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0, help="decode threads (0: one per core)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_synth(root, args.persons, seed=1, size=(384, 512), workers=0)
        frames = [index_train(root).images, index_eval(root).images]
        n = sum(len(f) for f in frames)
        paths = {k: p for f in frames for k, p in zip(f["image_key"], f["path"])}
        boxes, digest = read_boxes(root / "truth" / "face_boxes.csv", root, paths)
        crops = [None, face_crop(FaceSpec(detector="none"), boxes, digest), face_crop(FaceSpec(), {}, "")]
        seconds = {v: [] for v in VARIANTS}
        for r in range(args.rounds):
            for variant, crop in zip(VARIANTS, crops):
                took, caches = build(root, frames, crop, Path(tmp) / f"cache-{r}-{variant[:4]}", args.workers)
                seconds[variant].append(took)
        faces = pd.concat([pd.read_parquet(c.faces_path) for c in caches])
    base = statistics.median(seconds[VARIANTS[0]])
    print(f"{n} photos at 384x512, cache 128x96, {args.rounds} round(s), median seconds scaled to 1,000 photos:")
    print("| variant | s per 1,000 photos | vs no crop |\n|---|---:|---:|")
    for variant in VARIANTS:
        s = statistics.median(seconds[variant])
        print(f"| {variant} | {1000 * s / n:.1f} | {s / base:.2f}x |")
    ran = faces[faces["detect_ms"] > 0]
    print(f"Haar on the synthetic (drawn) faces: found {int((faces.source == 'detector').sum())}/{len(faces)}, "
          f"{ran['detect_ms'].mean():.1f} ms/photo of detector time (per thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
