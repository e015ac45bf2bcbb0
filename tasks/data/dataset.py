"""Index the competition's data exactly as distributed: train/images/<profile>/, eval/info.csv.

A person is keyed by folder name (ids repeat in the real data). Every structural problem
is collected and reported together, never one at a time.
"""
from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tasks.errors import UserError
from tasks.labels import MASK_STEMS, age_band, class_of, mask_of_stem

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
# re.ASCII: \d alone would take any script's digits ('٣٠' read as 30 without notice).
PROFILE = re.compile(r"^(?P<id>\d+(?:-\d+)?)_(?P<gender>male|female)_(?P<race>[A-Za-z]+)_(?P<age>\d{1,3})$",
                     re.ASCII)
TRAIN_COLUMNS = ["image_key", "person", "id", "stem", "path", "mask", "gender", "age", "label"]


@dataclass(frozen=True)
class Problem:
    file: str  # relative to the data root
    reason: str


@dataclass(frozen=True)
class Indexed:
    images: pd.DataFrame  # one row per usable image
    problems: list[Problem] = field(default_factory=list)


class DataError(UserError, ValueError):
    """Data that cannot be used as it is; the message lists every problem found."""


def describe(problems: list[Problem], limit: int = 50) -> str:
    lines = [f"  {p.file}: {p.reason}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def index_train(root: Path) -> Indexed:
    """All person folders and their seven images, labels from the folder names."""
    images_dir = root / "train" / "images"
    listed, problems = _read_train_csv(root)
    rows: list[dict] = []
    for folder in sorted(p for p in images_dir.iterdir() if not p.name.startswith(".")):
        rel = f"train/images/{folder.name}"
        if not folder.is_dir():
            problems.append(Problem(rel, "not a person folder (expected train/images/<profile>/)"))
            continue
        match = PROFILE.match(folder.name)
        if not match:
            problems.append(Problem(rel, "malformed profile name; expected {id}_{gender}_{race}_{age}"))
            continue
        if folder.name not in listed:
            problems.append(Problem(rel, "folder not listed in train/train.csv"))
        person_rows, person_problems = _index_person(folder, match, rel)
        rows += person_rows
        problems += person_problems
    existing = {p.name for p in images_dir.iterdir()}
    problems += [Problem("train/train.csv", f"row {n}: folder {name!r} not found under train/images/")
                 for name, n in listed.items() if name not in existing]
    return Indexed(_label_frame(rows), problems)


def read_table(path: Path, what: str) -> pd.DataFrame:
    """A CSV file as strings; DataError naming the file (and lines) if it is not a clean table.

    Rows with more fields than the header are refused here: pandas either fails on them or,
    when the first data row has one field too many, silently takes column one as the index.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a BOM (Excel) stays out of the header
    except FileNotFoundError:
        raise DataError(f"{path}: no such {what}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: the {what} is not UTF-8 text (byte {err.start}); save it as UTF-8 CSV") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the {what}: {err.strerror or err}") from None
    reader = csv.reader(io.StringIO(text))
    header = next((row for row in reader if row), None)
    if header is None:
        raise DataError(f"{path}: the {what} is empty; it needs a header line of column names")
    # line_num is read after each row is parsed: the editor's number of that row's last line.
    ragged = [f"line {reader.line_num} has {len(row)} fields, expected {len(header)}"
              for row in reader if len(row) > len(header)]
    if ragged:
        shown = "; ".join(ragged[:5]) + (f"; and {len(ragged) - 5} more" if len(ragged) > 5 else "")
        raise DataError(f"{path}: {shown} (header: {','.join(header)}); "
                        "quote values that contain commas, or remove the extra fields")
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


def _read_train_csv(root: Path) -> tuple[dict[str, int], list[Problem]]:
    path = root / "train" / "train.csv"
    table = read_table(path, "training list (train.csv)")
    missing = {"id", "gender", "race", "age", "path"} - set(table.columns)
    if missing:
        return {}, [Problem("train/train.csv", f"missing column(s) {sorted(missing)}")]
    # Line numbers as a person would count them in an editor (header is line 1).
    return {name: i + 2 for i, name in enumerate(table["path"])}, []


def _index_person(folder: Path, match: re.Match, rel: str) -> tuple[list[dict], list[Problem]]:
    found: dict[str, list[str]] = {}
    for file in folder.iterdir():
        stem, ext = file.stem, file.suffix.lower()
        # The official baseline skips macOS `._*` junk and anything not one of the 7 names.
        if file.name.startswith(".") or stem not in MASK_STEMS or ext not in IMAGE_EXTS:
            continue
        found.setdefault(stem, []).append(file.name)
    rows, problems = [], []
    for stem in MASK_STEMS:
        names = sorted(found.get(stem, []))
        if not names:
            problems.append(Problem(f"{rel}/{stem}.*", "missing image"))
            continue
        if len(names) > 1:
            problems.append(Problem(f"{rel}/{stem}.*", f"two files for one image: {names}; keeping {names[0]}"))
        rows.append({"image_key": f"{folder.name}/{stem}", "person": folder.name, "id": match["id"],
                     "stem": stem, "path": f"{rel}/{names[0]}", "mask": mask_of_stem(stem),
                     "gender": 0 if match["gender"] == "male" else 1, "age": int(match["age"])})
    return rows, problems


def _label_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=TRAIN_COLUMNS[:-1])
    frame = frame.astype({"mask": "int8", "gender": "int8", "age": "int16"})
    return relabel_classes(frame)


def relabel_classes(frame: pd.DataFrame) -> pd.DataFrame:
    """Recompute the 18-class label from mask, gender and age with the true bands."""
    frame = frame.copy()
    frame["label"] = class_of(frame["mask"], frame["gender"], age_band(frame["age"])).astype("int8")
    return frame


def index_eval(root: Path) -> Indexed:
    """info.csv's rows in their own order (the submission must keep it).

    Missing or unreadable eval images are found when the cache decodes them.
    """
    path = root / "eval" / "info.csv"
    table = read_table(path, "eval image list (info.csv)")
    if list(table.columns[:2]) != ["ImageID", "ans"]:
        raise DataError(f"{path}: expected columns ImageID,ans, found {list(table.columns)}")
    if table.empty:
        # Caught here, not after every job has trained and there are no test logits to blend.
        raise DataError(f"{path}: lists no eval images (header only); restore the competition's "
                        "eval/info.csv (one ImageID,ans row per eval image)")
    problems = []
    dup = table["ImageID"][table["ImageID"].duplicated()].tolist()
    if dup:
        problems.append(Problem("eval/info.csv", f"ImageID listed twice: {dup[:5]}"))
    frame = pd.DataFrame({"image_key": table["ImageID"], "path": "eval/images/" + table["ImageID"]})
    return Indexed(frame, problems)


def fingerprint(root: Path, paths: list[str]) -> str:
    """Identity of the image files: names, sizes and modification times, not contents."""
    digest = hashlib.sha256()
    for rel in paths:
        stat = (root / rel).stat() if (root / rel).exists() else None
        digest.update(f"{rel}\0{stat.st_size if stat else -1}\0{stat.st_mtime_ns if stat else -1}\n".encode())
    return digest.hexdigest()[:16]
