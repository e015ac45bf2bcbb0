"""Apply a relabel file (CSV `person,field,value`) to the training index.

person: a folder name, or an id that names exactly one folder.
field:  `gender` (value male/female), `age` (an integer), or one of the seven file stems
        (value: the mask state that image really shows: wear, incorrect, not_worn).
The audit writes its suggestions in this same format so they can be fed back here.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.data.dataset import DataError, read_table, relabel_classes
from tasks.labels import GENDER_NAMES, MASK_NAMES, MASK_STEMS

FIELDS = ("gender", "age", *MASK_STEMS)


@dataclass(frozen=True)
class RelabelSummary:
    rows: int
    changed_images: int
    by_field: dict[str, int]

    def text(self, source: Path) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.by_field.items()))
        return f"relabel: {self.rows} rows from {source} changed {self.changed_images} images ({parts})"


def read_relabel_table(path: Path) -> pd.DataFrame:
    """The rows of a relabel file with their line numbers; lines starting with # are notes."""
    table = read_table(Path(path), "relabel file")
    if list(table.columns[:3]) != ["person", "field", "value"]:
        raise DataError(f"{path}: the first columns must be person,field,value; found {list(table.columns)}")
    # Filtered here rather than by read_csv(comment=...) so line numbers stay the editor's.
    table = table.assign(line=range(2, len(table) + 2))
    return table[~table["person"].str.lstrip().str.startswith("#")].reset_index(drop=True)


def apply_relabel(images: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, RelabelSummary]:
    """Return a relabelled copy of the index; DataError lists every bad row at once."""
    table = read_relabel_table(path)
    persons = _person_lookup(images)
    out = images.copy()
    errors, changed, counts = [], 0, Counter()
    for row in table.itertuples(index=False):
        person, fld, value, line = (str(row[0]).strip(), str(row[1]).strip(), str(row[2]).strip(), row.line)
        try:
            key = _resolve_person(persons, person)
            rows = _rows_for(out, key, fld)
            col, new = _parse_value(fld, value)
        except ValueError as err:
            errors.append(f"  {path}:{line}: {err}")
            continue
        changed += int((out.loc[rows, col] != new).sum())
        out.loc[rows, col] = new
        counts[fld if fld in ("gender", "age") else "mask"] += 1
    if errors:
        raise DataError("relabel file has problems (nothing was applied):\n" + "\n".join(errors))
    return relabel_classes(out), RelabelSummary(len(table), changed, dict(counts))


def _person_lookup(images: pd.DataFrame) -> dict[str, list[str]]:
    lookup: dict[str, list[str]] = {}
    for person, pid in images[["person", "id"]].drop_duplicates().itertuples(index=False):
        lookup.setdefault(person, []).append(person)
        if pid != person:
            lookup.setdefault(pid, []).append(person)
    return lookup


def _resolve_person(lookup: dict[str, list[str]], person: str) -> str:
    matches = lookup.get(person, [])
    if not matches:
        raise ValueError(f"unknown person {person!r} (use a folder name or an id)")
    if len(matches) > 1:
        raise ValueError(f"id {person!r} names several folders {matches}; use the folder name")
    return matches[0]


def _rows_for(images: pd.DataFrame, person: str, fld: str) -> pd.Series:
    if fld not in FIELDS:
        raise ValueError(f"unknown field {fld!r}; expected one of {list(FIELDS)}")
    rows = images["person"] == person
    if fld in MASK_STEMS:
        rows &= images["stem"] == fld
    return rows


def parse_age(value: str) -> int:
    """A whole number of years in ASCII digits; ValueError otherwise."""
    # isascii: isdigit() and int() also take other scripts' digits ('٣٠' would be 30).
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) < 130:
        raise ValueError(f"age must be a whole number of years in digits 0-9, got {value!r}")
    return int(value)


def _parse_value(fld: str, value: str) -> tuple[str, int]:
    if fld == "gender":
        if value not in GENDER_NAMES:
            raise ValueError(f"gender must be one of {list(GENDER_NAMES)}, got {value!r}")
        return "gender", GENDER_NAMES.index(value)
    if fld == "age":
        return "age", parse_age(value)
    if value not in MASK_NAMES:
        raise ValueError(f"{fld} must be a mask state {list(MASK_NAMES)}, got {value!r}")
    return "mask", MASK_NAMES.index(value)
