"""Prepare's cost of the face crop per 1,000 photos at 384x512: none, a boxes file, the detector.

    python -m benchmarks.bench_faces [--persons 86] [--rounds 1] [--workers 0]

Writes a real-size synthetic dataset (86 training and 57 eval people: 1,001 photos), then
builds the decode-once cache (what prepare spends its time on) three ways, each into an
empty cache folder: (a) no data.face, (b) data.face with the synth's truth/face_boxes.csv
and detector none (the crop alone), (c) data.face.detector=haar on every photo. The variants
run in one process, interleaved `--rounds` times: read the ratios, not the lone times.
It also prints the Haar detector's hit rate on the synthetic faces (drawn, not photographed:
expect it low), and (--real) its rate and ms/photo on the real photo matplotlib ships,
shifted and scaled into 384x512 frames, bare and with a drawn mask over nose and mouth.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from tasks.data.cache import ensure_cache
from tasks.data.dataset import index_eval, index_train
from tasks.faces.boxes import read_boxes
from tasks.faces.crop import face_crop
from tasks.spec.face import FaceSpec
from tasks.synth.write import write_synth

VARIANTS = ("no crop", "crop from boxes file", "crop + Haar detector")
HOPPER_FACE = (150, 100, 380, 330)  # the face in matplotlib's grace_hopper.jpg (512x600)


def real_photo_table() -> None:
    """Haar on the shipped real photo, moved and scaled as phone photos are, bare and masked."""
    import matplotlib
    import numpy as np
    from PIL import Image, ImageDraw

    from tasks.faces.detect import HaarDetector

    photo = Image.open(Path(matplotlib.__file__).parent / "mpl-data/sample_data/grace_hopper.jpg").convert("RGB")
    detector, rng = HaarDetector(2), np.random.default_rng(0)
    print("| real photo (grace_hopper) in 384x512 | found | IoU > 0.5 | ms/photo |\n|---|---:|---:|---:|")
    for masked in (False, True):
        found = near = 0
        started = time.perf_counter()
        for _ in range(40):
            scale = rng.uniform(0.35, 0.85)  # face 80-195 px wide, wholly inside the frame
            side = (HOPPER_FACE[2] - HOPPER_FACE[0]) * scale
            left = int(rng.uniform(0, 384 - side) - HOPPER_FACE[0] * scale)
            top = int(rng.uniform(0, 512 - side) - HOPPER_FACE[1] * scale)
            face = [v * scale + (left, top)[i % 2] for i, v in enumerate(HOPPER_FACE)]
            frame = Image.new("RGB", (384, 512), tuple(int(v) for v in rng.integers(40, 220, 3)))
            frame.paste(photo.resize((round(512 * scale), round(600 * scale))), (left, top))
            if masked:  # a light surgical mask from just under the eyes to below the chin
                w, h = face[2] - face[0], face[3] - face[1]
                ImageDraw.Draw(frame).rounded_rectangle(
                    [face[0] + 0.08 * w, face[1] + 0.45 * h, face[2] - 0.08 * w, face[3] + 0.15 * h],
                    radius=int(0.2 * w), fill=(150, 190, 222))
            hit = detector.detect(np.asarray(frame.convert("L")))
            found += hit is not None
            near += hit is not None and _iou(hit.box, face) > 0.5
        ms = 1000 * (time.perf_counter() - started) / 40
        print(f"| {'masked' if masked else 'bare'} (40 frames) | {found}/40 | {near}/40 | {ms:.0f} |")


def _iou(a, b) -> float:
    ix, iy = max(0.0, min(a[2], b[2]) - max(a[0], b[0])), max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy)


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
    parser.add_argument("--real", action="store_true", help="only the real-photo table")
    args = parser.parse_args(argv)
    real_photo_table()
    if args.real:
        return 0
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
