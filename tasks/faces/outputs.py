"""What prepare writes about the face crop: results/<name>/faces.parquet and face_misses.csv.

faces.parquet has one row per photo, training and eval alike: image_key, split, path (from
the data root), the face box x0,y0,x1,y1 in the original photo's pixels, score, source
(detector | file | fallback | unreadable), the crop actually cut (crop_x0..crop_y1) and the
photo's width and height, so a later step (Grad-CAM, the report) can map a cached image back
onto its photo.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.atomic import atomic_path


@dataclass(frozen=True)
class FaceSummary:
    photos: int
    detected: int
    from_file: int
    fallback: int
    detector_ran: int  # photos the detector looked at (those without a file box)
    detect_seconds: float  # summed over photos when the cache was built; 0 if it already existed

    def text(self, fallback: str) -> str:
        if self.detector_ran:
            detector = (f"detector found {self.detected}/{self.detector_ran} "
                        f"({self.detected / self.detector_ran:.1%}) in {self.detect_seconds:.1f} s, "
                        f"{1000 * self.detect_seconds / self.detector_ran:.1f} ms/photo per thread (timed when the "
                        "crops were cached)")
        else:
            detector = "detector not run"
        return (f"faces: {self.photos} photos; {detector}; {self.from_file} boxes from the file; "
                f"{self.fallback} misses took fallback={fallback} (listed in face_misses.csv)")


def face_table(caches: dict[str, object]) -> pd.DataFrame:
    """The caches' face records, train first, each row tagged with its split."""
    frames = [pd.read_parquet(c.faces_path).assign(split=split) for split, c in caches.items()]
    table = pd.concat(frames, ignore_index=True)
    return table[["image_key", "split", *[c for c in table.columns if c not in ("image_key", "split")]]]


def write_faces(out: Path, caches: dict[str, object]) -> FaceSummary:
    table = face_table(caches)
    with atomic_path(out / "faces.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    misses = table[table["source"] == "fallback"][["image_key", "split", "path"]]
    with atomic_path(out / "face_misses.csv") as tmp:
        misses.to_csv(tmp, index=False)
    source = table["source"].value_counts()
    return FaceSummary(len(table), int(source.get("detector", 0)), int(source.get("file", 0)),
                       int(source.get("fallback", 0)), int((table["detect_ms"] > 0).sum()),
                       sum(c.detect_seconds for c in caches.values()))
