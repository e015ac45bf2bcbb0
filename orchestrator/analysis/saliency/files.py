"""results/<name>/explain/ has one writer, the explain step, and it owns only what it wrote.

Each run lists the files it wrote in explain/.explain.json. A later run deletes only files an
earlier list names that it did not write again (a sheet of a model no longer explained would
mislead): never the user's own notes, and never the files of a folder that explain/ links to,
which carries no list of ours. The report reads the sheets the list names.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tasks.atomic import write_text
from tasks.user_files import check_folder

RECORD = ".explain.json"
WRITER = "maskfold explain"


@dataclass(frozen=True)
class ExplainFolder:
    path: Path
    experiment: str  # the results folder, resolved: a list written for another one is not ours
    previous: tuple[str, ...]  # what the last explain of this experiment wrote here

    @classmethod
    def open(cls, exp_dir: Path) -> ExplainFolder:
        path = exp_dir / "explain"
        check_folder(path, "the explain folder", "move that file away; explain writes its sheets there")
        path.mkdir(exist_ok=True)
        experiment = str(exp_dir.resolve())
        return cls(path, experiment, tuple(listed(path, experiment)))

    def commit(self, written: list[Path]) -> None:
        """Record `written` (files in this folder) and delete what only the previous run wrote."""
        names = sorted({p.name for p in written})
        stale = [n for n in self.previous if n not in names]
        self._record(sorted({*names, *stale}))  # a crash while deleting leaves them still listed
        for name in stale:
            path = self.path / name
            if path.is_file() or path.is_symlink():  # a folder of that name is no file of ours
                path.unlink(missing_ok=True)
        self._record(names)

    def _record(self, names: list[str]) -> None:
        write_text(self.path / RECORD, json.dumps({"written_by": WRITER, "experiment": self.experiment,
                                                   "files": names}, indent=1))


def listed(folder: Path, experiment: str | None = None) -> list[str]:
    """The file names the last explain wrote in `folder` ([] without a list of ours; with
    `experiment`, only a list written for that results folder counts)."""
    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):  # none, or damaged: nothing is known to be ours
        return []
    if not isinstance(record, dict) or record.get("written_by") != WRITER:
        return []
    if experiment is not None and record.get("experiment") != experiment:
        return []
    files = record.get("files")
    return [n for n in files if _plain_name(n)] if isinstance(files, list) else []


def has_record(folder: Path) -> bool:
    return (folder / RECORD).is_file()


def _plain_name(name) -> bool:
    """A file directly in the folder: a list naming ../x or a/b is not followed."""
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name and name != RECORD
