"""One driver per experiment: a file lock in results/<name>/ held while a command writes there.

Two drivers on one experiment would delete each other's scratch folders and interleave their
writes; the second one refuses at once and names the first. The kernel drops the lock when
its holder dies, however it dies, so a crashed driver never leaves a stale lock behind.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tasks.errors import UserError
from tasks.user_files import check_folder, user_input

LOCK_NAME = ".lock"
RESULTS_FOLDER = "the experiment's results folder"
OTHER_NAME = "or work under another name with --set name=<new name>"


class ExperimentBusy(UserError, RuntimeError):
    """Another process holds the experiment's lock."""


@contextlib.contextmanager
def experiment_lock(out_dir: Path, command: str = "", otherwise: str = OTHER_NAME) -> Iterator[None]:
    """Hold results/<name>/.lock for the block, or raise ExperimentBusy naming the holder and
    saying what else to do (`otherwise`).

    A block that fails having written nothing (a refused run: bad data, duplicate photos, a
    round 1 with other folds) leaves no trace: the folders this call made are removed again.
    """
    out_dir = Path(out_dir)
    check_results_folder(out_dir)
    made = [d for d in (out_dir, *out_dir.parents) if not d.exists()]  # deepest first
    fd = _acquire(out_dir, otherwise)
    try:
        what = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200]
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} ({what}, since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n".encode(), 0)
        try:
            yield
        except BaseException:
            _remove_if_untouched(out_dir, made)  # still holding the lock: no one else is in there
            raise
    finally:
        os.close(fd)  # closing drops the lock


def _acquire(out_dir: Path, otherwise: str) -> int:
    """An open, locked descriptor of out_dir/.lock, the file now at that path."""
    path = out_dir / LOCK_NAME
    for _ in range(3):
        with user_input(out_dir, RESULTS_FOLDER, f"make it writable, {OTHER_NAME}"):
            out_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except FileNotFoundError:  # a refused driver removed the folder it had made just now
                continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ExperimentBusy(
                f"{out_dir}: {holder} is working on this experiment. Wait for it to finish (or stop it), "
                f"{otherwise}") from None
        if _is_at(fd, path):
            return fd
        os.close(fd)  # a refused driver removed that lock file after we opened it: lock the new one
    raise ExperimentBusy(f"{out_dir}: other drivers keep starting and stopping on this experiment; try again")


def _is_at(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _remove_if_untouched(out_dir: Path, made: list[Path]) -> None:
    """Remove the lock and the folders this call made if nothing else was written in them."""
    if out_dir not in made or os.listdir(out_dir) != [LOCK_NAME]:
        return
    (out_dir / LOCK_NAME).unlink()
    for folder in made:
        try:
            folder.rmdir()
        except OSError:  # not empty (another experiment in results/, say): kept
            return


def check_results_folder(out_dir: Path) -> None:
    """InputError unless results/<name> is a folder or can be made one: run, prepare and search
    check it before any work (a dry run too, which would otherwise plan jobs that cannot run)."""
    check_folder(out_dir, RESULTS_FOLDER, "move that file away, or work under another name with "
                                          "--set name=<new name> (or --set results_dir=<folder>)")
