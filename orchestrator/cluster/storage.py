"""Train storage: checked for writing before any job starts, read back from when a job ends."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from tasks.atomic import atomic_dir
from tasks.errors import UserError
from tasks.job_io import JobResult, job_paths, unfinished_reason, write_result


class StorageError(UserError, RuntimeError):
    """Train storage the driver cannot write to: every job would fail there."""


def check_storage(storage: str) -> None:
    """Write and remove a probe file in the Train storage, or raise StorageError saying why."""
    import pyarrow as pa
    import pyarrow.fs

    try:
        if "://" in storage:
            filesystem, path = pyarrow.fs.FileSystem.from_uri(storage)
        else:
            filesystem, path = pyarrow.fs.LocalFileSystem(), os.path.abspath(storage)
        filesystem.create_dir(path, recursive=True)
        probe = f"{path}/.maskfold-probe-{os.getpid()}"
        with filesystem.open_output_stream(probe) as out:
            out.write(b"ok")
        filesystem.delete_file(probe)
    except (OSError, pa.ArrowException, ValueError) as err:
        raise StorageError(f"Train storage {storage}: cannot write there ({type(err).__name__}: {err}). Pass "
                           "--storage (or MASKFOLD_STORAGE) pointing at a writable folder or bucket") from None


def open_checkpoint(checkpoint_path: str, storage: str):
    """A Train checkpoint in local or shared (s3://, gs://) storage."""
    import pyarrow.fs
    import ray.train

    filesystem, _ = pyarrow.fs.FileSystem.from_uri(storage) if "://" in storage else (None, None)
    return ray.train.Checkpoint(checkpoint_path, filesystem=filesystem)


def copy_outputs(checkpoint_path: str, storage: str, out_dir: Path) -> None:
    """Copy a final checkpoint (local or on shared storage) into results/, atomically."""
    checkpoint = open_checkpoint(checkpoint_path, storage)
    with atomic_dir(out_dir) as staged:
        checkpoint.to_directory(str(staged))
        reason = unfinished_reason(staged)
        if reason:
            raise RuntimeError(f"{checkpoint_path} does not hold a finished job's outputs ({reason})")
        # The worker wrote its node-local paths; from here on the outputs live in results/.
        write_result(staged, replace(JobResult.read(staged), **job_paths(out_dir)))
