"""Face boxes in the coordinates of the image a model saw, for face focus and the overlays.

A box is in the original photo's pixels; the model saw the cached image, which is the crop
recorded in faces.parquet (data.face set) or else the whole photo, resized. A box becomes
fractions x0, y0, x1, y1 of that image (clipped to it), NaN where no face box is known.
Boxes come from `--boxes FILE` when given (the data.face.boxes format), else from
faces.parquet (its fallback rows have no face). The eval pipeline is assumed to move no
pixels (the demo's is empty): a geometric eval transform would misplace the boxes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.analysis.saliency.selection import ExplainError

NO_BOX = (np.nan,) * 4


@dataclass(frozen=True)
class FaceBoxes:
    source: str  # said on the console and in the report: where the boxes came from
    boxes: dict[str, tuple[float, ...]]  # image_key -> face box, photo pixels
    crops: dict[str, tuple[float, ...]]  # image_key -> the crop the cache holds, photo pixels (faces.parquet)
    paths: dict[str, Path]  # image_key -> photo, to read its size when there is no crop

    def fractions(self, keys) -> np.ndarray:
        """(N, 4) fractions of the model's image; NaN rows where the box is unknown."""
        return np.array([self._fraction(k) for k in keys], dtype=np.float64).reshape(-1, 4)

    def _fraction(self, key: str) -> tuple[float, ...]:
        box = self.boxes.get(key)
        if box is None:
            return NO_BOX
        crop = self.crops.get(key) or _whole_photo(self.paths.get(key))
        if crop is None:
            return NO_BOX
        cx0, cy0, cx1, cy1 = crop
        x0, y0, x1, y1 = box
        fx = np.clip([(x0 - cx0) / (cx1 - cx0), (x1 - cx0) / (cx1 - cx0)], 0, 1)
        fy = np.clip([(y0 - cy0) / (cy1 - cy0), (y1 - cy0) / (cy1 - cy0)], 0, 1)
        return (fx[0], fy[0], fx[1], fy[1]) if fx[1] > fx[0] and fy[1] > fy[0] else NO_BOX


def _whole_photo(path: Path | None) -> tuple[float, ...] | None:
    from PIL import Image

    if path is None:
        return None
    try:
        with Image.open(path) as im:  # the header only
            return (0.0, 0.0, float(im.width), float(im.height))
    except (OSError, ValueError):
        return None


def load_face_boxes(exp_dir: Path, dataset, root: Path, boxes_file: Path | None) -> FaceBoxes | None:
    """The boxes face focus is measured with; None (and face focus skipped) when there are none."""
    paths = {k: p for frame in (dataset.train, dataset.eval) for k, p in zip(frame["image_key"], frame["path"])}
    faces_path = exp_dir / "faces.parquet"
    faces = pd.read_parquet(faces_path) if faces_path.is_file() else None
    crops = {}
    if faces is not None:
        crop_columns = ["crop_x0", "crop_y0", "crop_x1", "crop_y1"]
        crops = dict(zip(faces["image_key"], faces[crop_columns].astype(float).itertuples(index=False, name=None)))
    if boxes_file is not None:
        from tasks.data.dataset import DataError
        from tasks.faces.boxes import read_boxes

        try:
            boxes, _ = read_boxes(boxes_file, root, paths)
        except DataError as err:  # the same checks and line numbers as data.face.boxes
            raise ExplainError(str(err).replace("data.face.boxes: ", "--boxes: ", 1)) from None
        source = f"boxes file {boxes_file}"
    elif faces is not None:
        found = faces[faces["source"] != "fallback"]
        boxes = dict(zip(found["image_key"], found[["x0", "y0", "x1", "y1"]].astype(float).itertuples(
            index=False, name=None)))
        source = f"{faces_path.name} (the boxes the crop was cut around)"
    else:
        return None
    return FaceBoxes(source, boxes, crops, {k: root / p for k, p in paths.items()})
