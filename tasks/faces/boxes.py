"""data.face.boxes: a CSV `image,x0,y0,x1,y1` of face boxes that beat the detector.

`image` is `<profile folder>/<file stem>` for a training photo and the ImageID for an eval
photo (the image keys of tasks/data/dataset.py); coordinates are pixels of the original photo.
Every bad row is reported at once, with its line number, before any image is decoded.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
from pathlib import Path

from PIL import Image

from tasks.data.dataset import DataError

COLUMNS = ["image", "x0", "y0", "x1", "y1"]
SHOWN = 20


def read_boxes(path: Path, root: Path, paths: dict[str, str]) -> tuple[dict[str, tuple[float, ...]], str]:
    """(image_key -> box, sha256 of the file); `paths` maps every known image key to its file.

    DataError listing every malformed row, unknown image, repeated image and box that is not
    inside its photo.
    """
    try:
        raw = Path(path).read_bytes()
        text = raw.decode("utf-8-sig")
    except FileNotFoundError:
        # A synthetic dataset written before the generator drew boxes has no truth/face_boxes.csv.
        hint = (" (synthetic data from before face boxes existed has none: write it again with "
                "python -m tasks.synth ... --overwrite)") if Path(path).parent.name == "truth" else ""
        raise DataError(f"data.face.boxes: {path}: no such file{hint}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"data.face.boxes: {path}: cannot read it as UTF-8 text ({err})") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip() for c in rows[0]] != COLUMNS:
        raise DataError(f"data.face.boxes: {path}: line 1 must be the header {','.join(COLUMNS)}, "
                        f"found {','.join(rows[0]) if rows else 'an empty file'}")
    boxes, problems, seen = {}, [], {}
    for line, row in enumerate(rows[1:], start=2):  # one CSV row per line: boxes hold no quoted newlines
        if not row:
            continue
        why = _row_problem(row, paths, seen)
        if why:
            problems.append((line, f"line {line}: {why}"))
            continue
        seen[row[0].strip()] = line
        boxes[row[0].strip()] = tuple(float(v) for v in row[1:])
    problems = [text for _, text in sorted(problems + _outside(boxes, seen, root, paths))]
    if problems:
        more = f"\n  ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise DataError(f"data.face.boxes: {path}: {len(problems)} bad row(s):\n"
                        + "\n".join(f"  {p}" for p in problems[:SHOWN]) + more
                        + "\n  image is <profile folder>/<file stem> for training photos (e.g. "
                          "000001_female_Asian_45/mask1) and the ImageID for eval photos; x0,y0,x1,y1 are "
                          "pixels of the original photo with x0 < x1 and y0 < y1.")
    return boxes, hashlib.sha256(raw).hexdigest()


def _row_problem(row: list[str], paths: dict[str, str], seen: dict[str, int]) -> str:
    if len(row) != len(COLUMNS):
        return f"{len(row)} fields, expected {len(COLUMNS)} ({','.join(COLUMNS)})"
    key = row[0].strip()
    try:
        x0, y0, x1, y1 = (float(v) for v in row[1:])
    except ValueError:
        return f"{key}: x0,y0,x1,y1 must be numbers, got {','.join(row[1:])}"
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or not (x0 < x1 and y0 < y1):
        return f"{key}: an empty box ({x0:g},{y0:g})-({x1:g},{y1:g}); need x0 < x1 and y0 < y1"
    if key not in paths:
        hint = " (a training photo is <profile folder>/<stem>, no extension)" if "/" in key else ""
        return f"unknown image {key!r}{hint}"
    if key in seen:
        return f"{key} already has a box on line {seen[key]}"
    return ""


def _outside(boxes: dict, lines: dict[str, int], root: Path, paths: dict[str, str]) -> list[tuple[int, str]]:
    """Boxes not inside their photo; only the header of each photo is read."""
    problems = []
    for key, (x0, y0, x1, y1) in boxes.items():
        try:
            with Image.open(root / paths[key]) as im:
                width, height = im.size
        except (OSError, ValueError):
            continue  # the cache build reports unreadable photos with the data's other problems
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            problems.append((lines[key], f"line {lines[key]}: {key}: box ({x0:g},{y0:g})-({x1:g},{y1:g}) is "
                                         f"outside the {width}x{height} photo"))
    return problems
