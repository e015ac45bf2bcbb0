"""New photos through a chosen ensemble: decode (and crop) once per way the experiments decoded,
every fold model through a runner (torch here, Ray tasks, or onnxruntime), the blend, the table.

Unreadable photos are listed and left out; the rest are predicted. Nothing is written unless
every fold model ran.
"""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.analysis.predictions.combine import Blended, blend_logits
from orchestrator.analysis.predictions.ensemble import Ensemble, PredictError
from tasks.atomic import atomic_path
from tasks.data.cache import default_cache_dir
from tasks.data.dataset import Problem, describe
from tasks.labels import AGE_NAMES, GENDER_NAMES, MASK_NAMES, NUM_CLASSES, split_class
from tasks.log import Log
from tasks.serving.images import FACE_BOX, DecodedPhotos, decode_photos
from tasks.serving.members import FoldMember
from tasks.serving.photos import PhotoList

# members, their decodings' photos, log -> each member's (readable photos, 18) logits by key
Runner = Callable[[Sequence[FoldMember], dict[str, DecodedPhotos], Log], dict[str, np.ndarray]]
SHOWN = 20


@dataclass(frozen=True)
class PredictSummary:
    out: Path
    photos: int  # given (each once)
    predicted: int
    skipped: tuple[Problem, ...]
    repeated: int  # paths given more than once
    members: int  # fold models run
    decode_seconds: float
    model_seconds: float
    seconds: float  # everything, loading and writing included

    def lines(self, method: str, folder: Path) -> list[str]:
        rate = self.predicted / max(self.seconds, 1e-9)
        lines = [f"predicted {self.predicted} of {self.photos} photos with {method} of {folder} ({self.members} fold "
                 f"models) in {self.seconds:.1f}s: {rate:.1f} photos/s (decode {self.decode_seconds:.1f}s, models "
                 f"{self.model_seconds:.1f}s) -> {self.out}"]
        if self.repeated:
            lines.append(f"{_count(self.repeated, 'path')} given more than once, predicted once")
        if self.skipped:
            lines.append(f"skipped {_count(len(self.skipped), 'photo')} that could not be read (not in {self.out.name}):\n"
                         + describe(list(self.skipped), SHOWN))
        return lines


def predict_photos(ensemble: Ensemble, photos: PhotoList, run: Runner, out: Path, with_probs: bool,
                   log: Log, started: float | None = None) -> PredictSummary:
    """Predict `photos` into the CSV `out`; PredictError if none of them can be read."""
    started = time.monotonic() if started is None else started
    decodings = {m.decoding.key: m.decoding for m in ensemble.members}
    with tempfile.TemporaryDirectory(prefix=".predict-", dir=_scratch()) as scratch:
        t = time.monotonic()
        decoded = {key: decode_photos(photos.paths, d, Path(scratch), log) for key, d in decodings.items()}
        decode_seconds = time.monotonic() - t
        ok = np.logical_and.reduce([d.ok for d in decoded.values()])
        if not ok.any():
            problems = next(iter(decoded.values())).problems
            which = "the photo" if len(photos.paths) == 1 else f"none of the {len(photos.paths)} photos"
            raise PredictError(f"{which} could not be read: {problems[0].file}: {problems[0].reason}"
                               + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        t = time.monotonic()
        logits = run(ensemble.members, decoded, log)
        model_seconds = time.monotonic() - t
    aligned = {m.key: _rows(logits[m.key], decoded[m.decoding.key].ok, ok) for m in ensemble.members}
    blended = blend_logits(ensemble, aligned, int(ok.sum()))
    first = decoded[ensemble.members[0].decoding.key]
    write_table(out, prediction_table(first, ok, blended, with_probs))
    skipped = tuple(p for d in decoded.values() for p in d.problems)
    return PredictSummary(out, len(photos.paths), int(ok.sum()), tuple(dict.fromkeys(skipped)), photos.repeated,
                          len(ensemble.members), decode_seconds, model_seconds, time.monotonic() - started)


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" + ("" if n == 1 else "s")


def _scratch() -> Path:
    """Decoded photos go beside the image caches (sized for them), not into a small /tmp."""
    folder = default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _rows(logits: np.ndarray, readable: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """A member's logits of its readable photos -> those of the photos every decoding could read."""
    full = np.full((len(readable), logits.shape[1]), np.nan, np.float32)  # 18, or a specialist's width
    full[readable] = logits
    return full[keep]


def prediction_table(photos: DecodedPhotos, ok: np.ndarray, blended: Blended, with_probs: bool) -> pd.DataFrame:
    """One row per predicted photo: path, class, its three attributes in words, its probability, the face box."""
    mask, gender, age = split_class(blended.labels)
    table = pd.DataFrame({"path": np.asarray(photos.paths, dtype=object)[ok], "class": blended.labels,
                          "mask": np.asarray(MASK_NAMES)[mask], "gender": np.asarray(GENDER_NAMES)[gender],
                          "age": np.asarray(AGE_NAMES)[age],
                          "prob": blended.probs[np.arange(len(blended.labels)), blended.labels].round(6),
                          "face_source": np.asarray(photos.box_source, dtype=object)[ok]})
    for i, column in enumerate(FACE_BOX):
        table[column] = photos.boxes[ok, i].round(1)
    if with_probs:
        for c in range(NUM_CLASSES):
            table[f"prob_{c}"] = blended.probs[:, c].round(6)
    return table


def write_table(out: Path, table: pd.DataFrame) -> None:
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
