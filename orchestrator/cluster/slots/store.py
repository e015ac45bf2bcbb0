"""Each job's own checkpoints in Train storage, under its job id.

A slot's Train run trains job after job, so the run's one "latest checkpoint" cannot hold
them; each job keeps its last epoch (to resume from, on any node) and, once finished, its
outputs (for the driver to collect) here:

    <storage>/maskfold-jobs/<experiment>/<job_id>/epoch-<n>/   the files a resume needs
    <storage>/maskfold-jobs/<experiment>/<job_id>/final/       every output of the finished job
    <storage>/maskfold-jobs/<experiment>/<job_id>/latest.json  which of them is current

latest.json is written last (a rename on local disks, one PUT on object stores), so a job
killed mid-upload resumes from the epoch before.
"""
from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path


def storage_fs(storage: str):
    """(pyarrow filesystem, path) of local or shared (s3://, gs://) Train storage."""
    import pyarrow.fs

    if "://" in storage:
        return pyarrow.fs.FileSystem.from_uri(storage)
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(storage)


def copy_tree(source_fs, source: str, target_fs, target: str) -> None:
    """A file, or a folder with everything in it, from one filesystem to another."""
    import pyarrow.fs

    info = source_fs.get_file_info(source)
    if info.type == pyarrow.fs.FileType.File:
        target_fs.create_dir(posixpath.dirname(target), recursive=True)
        pyarrow.fs.copy_files(source, target, source_filesystem=source_fs, destination_filesystem=target_fs)
        return
    target_fs.create_dir(target, recursive=True)
    for entry in source_fs.get_file_info(pyarrow.fs.FileSelector(source, recursive=True)):
        relative = posixpath.relpath(entry.path, source)
        if entry.type == pyarrow.fs.FileType.Directory:
            target_fs.create_dir(posixpath.join(target, relative), recursive=True)
        else:
            copy_tree(source_fs, entry.path, target_fs, posixpath.join(target, relative))


@dataclass(frozen=True)
class JobStore:
    storage: str  # as the user gave it: a folder or a URI
    experiment: str
    job_id: str

    @property
    def uri(self) -> str:
        """The job's folder as a Train checkpoint path (what job.json records)."""
        return f"{self.storage.rstrip('/')}/maskfold-jobs/{self.experiment}/{self.job_id}"

    def _root(self):
        filesystem, base = storage_fs(self.storage)
        return filesystem, posixpath.join(base, "maskfold-jobs", self.experiment, self.job_id)

    def latest(self) -> dict:
        """{"epoch": n, "dir": name} of the newest upload, "final": true once finished; {} for none."""
        import pyarrow.fs

        filesystem, root = self._root()
        path = posixpath.join(root, "latest.json")
        if filesystem.get_file_info(path).type != pyarrow.fs.FileType.File:
            return {}
        with filesystem.open_input_stream(path) as stream:
            return json.loads(stream.read())

    def final_path(self) -> str | None:
        """The finished job's outputs as a path in storage, or None while it is unfinished."""
        latest = self.latest()
        return posixpath.join(self.uri, latest["dir"]) if latest.get("final") else None

    def save(self, work: Path, names, epoch: int, final: bool = False) -> str:
        """Upload `names` (files or folders) of `work` as this job's newest state; its path."""
        import pyarrow.fs

        filesystem, root = self._root()
        name = "final" if final else f"epoch-{epoch:04d}"
        target = posixpath.join(root, name)
        if filesystem.get_file_info(target).type != pyarrow.fs.FileType.NotFound:
            filesystem.delete_dir(target)
        filesystem.create_dir(target, recursive=True)
        local = pyarrow.fs.LocalFileSystem()
        for entry in names:
            if (work / entry).exists():
                copy_tree(local, str(work / entry), filesystem, posixpath.join(target, entry))
        previous = self.latest().get("dir")
        self._write_latest(filesystem, root, {"epoch": epoch, "dir": name, "final": final})
        if previous and previous != name:
            filesystem.delete_dir(posixpath.join(root, previous))
        return posixpath.join(self.uri, name)

    def restore(self, work: Path) -> int:
        """Download the newest epoch into `work`; the epoch it holds (0: nothing saved)."""
        import pyarrow.fs

        latest = self.latest()
        if not latest or latest.get("final"):
            return 0
        filesystem, root = self._root()
        copy_tree(filesystem, posixpath.join(root, latest["dir"]), pyarrow.fs.LocalFileSystem(), str(work))
        return int(latest["epoch"])

    @staticmethod
    def _write_latest(filesystem, root: str, record: dict) -> None:
        path = posixpath.join(root, "latest.json")
        staged = f"{path}.{os.getpid()}.partial"
        with filesystem.open_output_stream(staged) as out:
            out.write(json.dumps(record).encode())
        filesystem.move(staged, path)
