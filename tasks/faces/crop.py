"""The face crop: boxes from a file or the detector, grown by a margin, fitted to the cache.

Each photo's crop is worked out once, while the decode-once cache is built (tasks/data/cache.py),
so detection runs in the same threads as decoding and is never repeated by jobs. A box is
in the original photo's pixels: x0, y0 (top left, inclusive) to x1, y1 (exclusive).

The crop is the face box grown by `margin` on every side, then widened or heightened to the
cache's aspect ratio (a square face box in a 4:3 cache would otherwise be stretched), moved
inside the photo where it fits and clipped where it does not. `background` treats what the
crop holds outside the grown box.
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter

from tasks.faces.detect import detector_version, make_detector
from tasks.spec.experiment import stable_hash
from tasks.spec.face import FaceSpec

Box = tuple[float, float, float, float]
BLANK = (128, 128, 128)  # mid-grey: zero after the usual normalisation, no edge for the model
FACE_COLUMNS = ["x0", "y0", "x1", "y1", "score", "source", "crop_x0", "crop_y0", "crop_x1", "crop_y1",
                "width", "height", "detect_ms"]


@dataclass(frozen=True)
class FaceRecord:
    """Where the face and the crop were in one photo, and where the face box came from."""

    box: Box
    score: float  # the detector's; NaN for a file's box or a fallback
    source: str  # detector | file | fallback
    crop: tuple[int, int, int, int]
    width: int
    height: int
    detect_ms: float = 0.0

    def row(self) -> list:
        return [*self.box, self.score, self.source, *self.crop, self.width, self.height, self.detect_ms]


def grow(box: Box, margin: float) -> Box:
    x0, y0, x1, y1 = box
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    return (x0 - dx, y0 - dy, x1 + dx, y1 + dy)


def fit_aspect(box: Box, aspect: float) -> Box:
    """Widen or heighten `box` about its centre so that height / width == aspect."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if h < aspect * w:
        grow_h = (aspect * w - h) / 2
        return (x0, y0 - grow_h, x1, y1 + grow_h)
    grow_w = (h / aspect - w) / 2
    return (x0 - grow_w, y0, x1 + grow_w, y1)


def place(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """Whole pixels inside the photo: shifted in where the box fits, clipped where it does not."""
    x0, y0, x1, y1 = box
    out = []
    for lo, hi, side in ((x0, x1, width), (y0, y1, height)):
        if hi - lo <= side:  # fits: move it in rather than lose part of the face
            shift = max(0.0, -lo) - max(0.0, hi - side)
            lo, hi = lo + shift, hi + shift
        out.append((max(0, int(np.floor(lo))), min(side, int(np.ceil(hi)))))
    (a, c), (b, d) = out
    return (a, b, max(c, a + 1), max(d, b + 1))


def fallback_box(kind: str, width: int, height: int) -> Box:
    """center: a centred square of half the shorter side (grown by the margin like any box);
    full: the whole photo."""
    if kind == "full":
        return (0.0, 0.0, float(width), float(height))
    half = min(width, height) / 4
    return (width / 2 - half, height / 2 - half, width / 2 + half, height / 2 + half)


def cut(photo: Image.Image, record: FaceRecord, margin: float, background: str) -> Image.Image:
    """The crop of `photo`, its background treated; at the photo's own resolution."""
    region = photo.crop(record.crop)
    if background == "keep":
        return region
    gx0, gy0, gx1, gy1 = place(grow(record.box, margin), record.width, record.height)
    cx0, cy0 = record.crop[:2]
    inner = (gx0 - cx0, gy0 - cy0, gx1 - cx0, gy1 - cy0)
    if background == "blur":  # a radius that scales with the crop: the backdrop's shapes go, its colours stay
        out = region.filter(ImageFilter.GaussianBlur(max(region.size) / 25))
    else:
        out = Image.new("RGB", region.size, BLANK)
    out.paste(region.crop(inner), inner[:2])
    return out


@dataclass(frozen=True)
class FaceCrop:
    """What the cache needs to crop one split: the settings, the file's boxes, the identity."""

    spec: FaceSpec
    boxes: dict[str, Box]  # image_key -> box from data.face.boxes
    identity: str  # settings, boxes and detector version: part of the cache key and the data hash
    _detector: list = field(default_factory=list, compare=False, repr=False)

    def detector(self):
        if not self._detector:  # made on first use: a cache that exists needs no detector
            self._detector.append(make_detector(self.spec.detector, self.spec.min_score))
        return self._detector[0]

    def apply(self, data: bytes, key: str, size: tuple[int, int]) -> tuple[np.ndarray, FaceRecord]:
        """Decode, find the face, crop and resize to `size` (H, W): one cache row and its record."""
        with Image.open(io.BytesIO(data)) as im:
            photo = im.convert("RGB")
        record = self.locate(photo, key, size[0] / size[1])
        region = cut(photo, record, self.spec.margin, self.spec.background)
        if region.size != (size[1], size[0]):
            region = region.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=2.0)
        return np.asarray(region), record

    def locate(self, photo: Image.Image, key: str, aspect: float) -> FaceRecord:
        width, height = photo.size
        box, score, source, ms = self.boxes.get(key), float("nan"), "file", 0.0
        if box is None and self.detector() is not None:
            started = time.perf_counter()
            found = self.detector().detect(np.asarray(photo.convert("L")))
            ms = 1000 * (time.perf_counter() - started)
            if found is not None:
                box, score, source = found.box, found.score, "detector"
        if box is None:
            box, source = fallback_box(self.spec.fallback, width, height), "fallback"
        grown = (0.0, 0.0, float(width), float(height)) if source == "fallback" and self.spec.fallback == "full" \
            else fit_aspect(grow(box, self.spec.margin), aspect)
        return FaceRecord(tuple(float(v) for v in box), score, source, place(grown, width, height),
                          width, height, ms)


def face_crop(spec: FaceSpec, boxes: dict[str, Box], boxes_hash: str) -> FaceCrop:
    identity = stable_hash({"settings": spec.model_dump(mode="json", exclude={"boxes"}), "boxes": boxes_hash,
                            "detector": detector_version(spec.detector)})
    return FaceCrop(spec, boxes, identity)


def write_records(path, keys: list[str], paths: list[str], records: list[FaceRecord | None]) -> None:
    """One row per image; a photo that could not be decoded has no box (source `unreadable`)."""
    import pandas as pd

    from tasks.atomic import atomic_path

    blank = [math.nan] * 4 + [math.nan, "unreadable"] + [-1] * 6 + [0.0]
    frame = pd.DataFrame([r.row() if r is not None else blank for r in records], columns=FACE_COLUMNS)
    frame.insert(0, "path", paths)
    frame.insert(0, "image_key", keys)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
