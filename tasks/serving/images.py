"""New photos decoded exactly as the eval photos were: the image cache's decode at the cache
size, and the face crop with the experiment's settings when it had `data.face`.

They go through `tasks.data.cache.ensure_cache` itself, into a cache of their own in a
temporary folder, so the loader, pipeline and batches that follow are the eval path's too.
No torch here: the exported (onnxruntime) runner decodes through this module as well.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.data.cache import ImageCache, ensure_cache
from tasks.data.dataset import Problem
from tasks.log import Log
from tasks.spec.face import FaceSpec

FACE_BOX = ("face_x0", "face_y0", "face_x1", "face_y1")


@dataclass(frozen=True)
class Decoding:
    """How an experiment's photos were decoded before its models saw them (its `data` section)."""

    cache_size: tuple[int, int]  # (H, W)
    face: FaceSpec | None
    workers: int = 0  # decode threads; 0: one per core

    @classmethod
    def of(cls, data) -> Decoding:
        """From a spec's `data` section (tasks.spec.experiment.DataSpec)."""
        return cls(tuple(data.cache_size), data.face, data.decode_workers)

    def record(self) -> dict:
        return {"cache_size": list(self.cache_size), "face": self.face.model_dump(mode="json") if self.face else None}

    @classmethod
    def from_record(cls, record: dict) -> Decoding:
        face = record.get("face")
        return cls(tuple(record["cache_size"]), FaceSpec.model_validate(face) if face else None)

    @property
    def key(self) -> str:
        """Equal for decodings that give the same pixels (decode threads do not change them)."""
        import json

        return json.dumps(self.record(), sort_keys=True)


@dataclass(frozen=True)
class DecodedPhotos:
    cache: ImageCache  # one row per photo given, in order; rows of unreadable photos hold zeros
    paths: tuple[str, ...]  # the photos, as given; also their keys in the cache
    ok: np.ndarray  # (N,) False for a photo that could not be read (listed in `problems`)
    problems: tuple[Problem, ...]
    boxes: np.ndarray  # (N, 4) the face box each crop grew from (photo pixels), NaN without a crop
    box_source: tuple[str, ...]  # detector | fallback per photo; "" without a crop

    @property
    def readable(self) -> tuple[str, ...]:
        return tuple(p for p, ok in zip(self.paths, self.ok) if ok)


def decode_photos(paths: Sequence[str], decoding: Decoding, cache_dir: Path, log: Log) -> DecodedPhotos:
    """Decode (and crop) every photo into a cache in `cache_dir`; unreadable ones are listed, not fatal."""
    crop = None
    if decoding.face is not None:
        from tasks.faces.crop import face_crop

        if decoding.face.boxes is not None:
            log(f"data.face.boxes ({decoding.face.boxes}) names the competition's photos, not these: each photo's face "
                f"comes from detector={decoding.face.detector}, else fallback={decoding.face.fallback}")
        crop = face_crop(decoding.face, {}, "")
    keys = list(paths)
    cache = ensure_cache(Path("."), keys, keys, decoding.cache_size, cache_dir, decoding.workers, label="photos",
                         crop=crop)
    boxes, source = np.full((len(keys), 4), np.nan), ("",) * len(keys)
    if cache.faces_path is not None:
        import pandas as pd

        faces = pd.read_parquet(cache.faces_path).set_index("image_key").reindex(keys)
        boxes = faces[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
        source = tuple("" if s == "unreadable" else str(s) for s in faces["source"])
    return DecodedPhotos(cache, tuple(keys), cache.ok.copy(), cache.problems, boxes, source)
