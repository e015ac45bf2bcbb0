"""The photos to predict, from the command line: files, folders (searched recursively) or text
files listing one path a line.

Folders are read as the loader reads the competition's folders (tasks/data/dataset.py): only
.jpg/.jpeg/.png, and names starting with "." (macOS `._*` junk, hidden files and folders) are
skipped. A photo named on the command line or in a list is taken as it is: if it cannot be read
the decoder lists it and the others are still predicted.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.data.dataset import IMAGE_EXTS
from tasks.errors import UserError


class PhotoError(UserError, ValueError):
    """A photo argument that names nothing to predict; the message says which and why."""


@dataclass(frozen=True)
class PhotoList:
    paths: tuple[str, ...]  # each photo once, in the order given (a folder's in sorted order)
    repeated: int = 0  # paths given more than once, predicted once


def is_photo_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTS


def collect_photos(arguments: Sequence[str | os.PathLike]) -> PhotoList:
    """Every photo the arguments name; PhotoError for an argument that names none."""
    if not arguments:
        raise PhotoError("no photos given: name photo files, folders or text files listing photo paths")
    found: list[str] = []
    for argument in arguments:
        found += _photos_of(Path(argument))
    unique = list(dict.fromkeys(found))
    return PhotoList(tuple(unique), len(found) - len(unique))


def _photos_of(path: Path) -> list[str]:
    if not path.exists():
        raise PhotoError(f"{path}: no such file or folder")
    if path.is_dir():
        photos = folder_photos(path)
        if not photos:
            raise PhotoError(f"{path}: no photos ({', '.join(IMAGE_EXTS)}) in this folder or below "
                             "(names starting with '.' are skipped)")
        return photos
    if is_photo_name(path):
        return [str(path)]
    return _listed(path)


def folder_photos(folder: Path) -> list[str]:
    """The photos under `folder`, sorted; hidden files and folders (and `._*`) left out."""
    photos = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        photos += [os.path.join(parent, f) for f in sorted(files)
                   if not f.startswith(".") and is_photo_name(Path(f))]
    return photos


def _listed(path: Path) -> list[str]:
    """A text file of paths, one a line (blank lines and `#` comments skipped); relative paths
    are taken from the list's own folder, so a list travels with its photos."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PhotoError(f"{path}: neither a photo ({', '.join(IMAGE_EXTS)}) nor a UTF-8 text file of photo "
                         "paths") from None
    except OSError as err:
        raise PhotoError(f"{path}: cannot be read ({err.strerror or err})") from None
    lines = [line.strip() for line in text.splitlines()]
    listed = [line for line in lines if line and not line.startswith("#")]
    if not listed:
        raise PhotoError(f"{path}: a text file that lists no photo paths (one path a line)")
    return [str(p if p.is_absolute() else path.parent / p) for p in map(Path, listed)]
