"""Write results atomically: a temp file in the same folder, then rename.

Every result file gets the mode an ordinary `open(..., "w")` would give it (0666 less the
umask, so 0644 usually): mkstemp's private 0600 would hide results from a team's other users
and differ from files written any other way.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `target`; rename onto it only if the block succeeds.

    A crash or exception leaves any earlier `target` untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask must set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_dir_mode() -> int:
    return 0o777 & ~current_umask()


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside `target`; it replaces `target` whole, and only if
    the block succeeds. A crash or exception leaves any earlier `target` untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staged
        staged.chmod(new_dir_mode())  # mkdtemp's 0700 would hide the results from other users
        swap_in_dir(staged, target)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def swap_in_dir(staged: Path, target: Path) -> None:
    """Put the complete folder `staged` in place of `target`; the old one is kept until then.

    Between the two renames `target` is briefly absent, but its old content is never deleted
    before the new one is in place: a crash there leaves it as `.<name>.old`.
    """
    staged, target = Path(staged), Path(target)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staged, target)
    shutil.rmtree(old, ignore_errors=True)
