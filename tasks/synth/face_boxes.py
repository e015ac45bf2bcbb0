"""Where the synthetic face sits in each photo, and truth/face_boxes.csv that records it.

Phone photos are not framed alike: people hold the camera nearer or farther, higher or lower,
off to one side. A per-person framing (the same hand on the same day for all seven photos)
moves and scales the face; the small per-photo shift of Shot stays on top. The boxes file
has the format of data.face.boxes, so the crop path runs on synthetic data end to end.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BOX_COLUMNS = ("image", "x0", "y0", "x1", "y1")


@dataclass(frozen=True)
class Framing:
    """One person's camera: the face's shift (share of width, height) and scale."""

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0


def make_framing(rng: np.random.Generator) -> Framing:
    # The face drifts by a few percent of the frame and its size by about +-10% from person to
    # person: enough that a fixed window misses part of some faces, small enough that a model
    # without the crop still finds the mask (the demo and the job tests train on whole photos).
    return Framing(dx=float(np.clip(rng.normal(0, 0.03), -0.06, 0.06)),
                   dy=float(np.clip(rng.normal(0, 0.02), -0.04, 0.04)),
                   scale=float(np.clip(np.exp(rng.normal(0, 0.1)), 0.8, 1.22)))


def pixel_box(box: tuple[float, float, float, float], ss: int, size: tuple[int, int]) -> tuple[int, ...]:
    """A canvas box (drawn at `ss` times the size) in whole pixels of the (W, H) photo."""
    x0, y0, x1, y1 = (v / ss for v in box)
    return (max(0, int(round(x0))), max(0, int(round(y0))), min(size[0], int(round(x1))),
            min(size[1], int(round(y1))))


def image_key(path: str, train: bool) -> str:
    """The key data.face.boxes uses: <profile folder>/<stem> for training, the ImageID for eval."""
    p = Path(path)
    return f"{p.parent.name}/{p.stem}" if train else p.name


def write_face_boxes(path: Path, rows: list[tuple[str, tuple[int, ...]]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(BOX_COLUMNS)
        writer.writerows([key, *box] for key, box in sorted(rows))
