"""Decode every image once into a memory-mapped uint8 array, reused by every job and run.

Per-epoch JPEG decoding, repeated for every fold and backbone, is the hidden cost of the
usual competition code. The cache is keyed by the file list's fingerprint and the cache
size, so any change to the files or the size builds a new one; a file lock makes two jobs
on one node share one build (one decodes, the other waits and then reads). The build also
records each file's sha256, so duplicate photos are found without reading the files again.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from tasks.atomic import atomic_path, write_text
from tasks.data.dataset import Problem, fingerprint
from tasks.spec.experiment import stable_hash

if TYPE_CHECKING:
    from tasks.faces.crop import FaceCrop

CACHE_VERSION = 2  # 2: the metadata holds each file's sha256


@dataclass(frozen=True)
class ImageCache:
    array_path: Path
    keys: tuple[str, ...]  # image_key of each row, in the order asked for
    ok: np.ndarray  # False where the file could not be decoded (row holds zeros)
    problems: tuple[Problem, ...]
    sha256: tuple[str, ...] = ()  # of each row's file bytes; "" where the file could not be read
    faces_path: Path | None = None  # with a face crop: each row's box, crop and source (tasks/faces/crop.py)
    detect_seconds: float = 0.0  # summed over the rows the detector ran on, when this cache was built

    def open(self) -> np.ndarray:
        """(N, H, W, 3) uint8, memory-mapped read-only: pages are shared between processes."""
        return np.load(self.array_path, mmap_mode="r")

    def rows(self, keys) -> np.ndarray:
        position = {k: i for i, k in enumerate(self.keys)}
        return np.array([position[k] for k in keys], dtype=np.int64)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MASKFOLD_CACHE", Path.home() / ".cache" / "maskfold"))


def ensure_cache(root: Path, keys: list[str], paths: list[str], size: tuple[int, int],
                 cache_dir: Path | None = None, workers: int = 0, label: str = "images",
                 crop: "FaceCrop | None" = None, write: bool = True) -> ImageCache:
    """Return the cache for these files at `size` (H, W), building it if no one has yet.

    With `crop`, each row holds the photo's face crop; the crop's identity is in the key, so
    other crop settings get a cache of their own (and no crop keeps the key it always had).
    Without `write` (a dry run) nothing is written: a built cache's record is read, else the
    files are read and decoded here to learn what a build would (which fail, their sha256),
    and the returned cache has no array to open.
    """
    cache_dir = Path(cache_dir or default_cache_dir())
    identity = {"v": CACHE_VERSION, "files": fingerprint(root, paths), "keys": stable_hash(keys), "size": list(size)}
    if crop is not None:
        identity["face"] = crop.identity
    stem = cache_dir / f"{label}-{size[0]}x{size[1]}-{stable_hash(identity)}"
    meta_path = stem.with_suffix(".json")
    if not write:  # the record is written last and atomically: present means complete, no lock needed
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else _scan(root, paths, size, workers, label,
                                                                                   crop is not None)
        return _cache(stem, keys, paths, meta, crop is not None and meta_path.exists())
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(stem.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # blocks while another process builds this cache
        if not meta_path.exists():
            _build(root, paths, size, stem, workers, label, keys, crop)
    return _cache(stem, keys, paths, json.loads(meta_path.read_text()), crop is not None)


def _cache(stem: Path, keys: list[str], paths: list[str], meta: dict, faces: bool) -> ImageCache:
    problems = tuple(Problem(paths[int(i)], why) for i, why in meta["failed"].items())
    ok = np.ones(len(keys), dtype=bool)
    ok[[int(i) for i in meta["failed"]]] = False
    return ImageCache(stem.with_suffix(".npy"), tuple(keys), ok, problems, tuple(meta["sha256"]),
                      stem.with_suffix(".faces.parquet") if faces else None, meta.get("detect_seconds", 0.0))


def decode(source: Path | bytes, size: tuple[int, int]) -> np.ndarray:
    """One image (a file, or its bytes) as (H, W, 3) uint8 at `size`; OSError/ValueError if unreadable."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
        # JPEG can decode straight at 1/2, 1/4 or 1/8 scale: far cheaper than full size.
        im.draft("RGB", (size[1], size[0]))
        im = im.convert("RGB")
        if im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=2.0)
        return np.asarray(im)


def _build(root: Path, paths: list[str], size: tuple[int, int], stem: Path, workers: int, label: str,
           keys: list[str], crop: "FaceCrop | None") -> None:
    n = len(paths)
    records: list = [None] * n
    with atomic_path(stem.with_suffix(".npy")) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size[0], size[1], 3))

        def row(i: int, data: bytes) -> None:
            if crop is None:
                out[i] = decode(data, size)
            else:  # detection, when needed, in the same thread: cv2 releases the GIL too
                out[i], records[i] = crop.apply(data, keys[i], size)

        failed, sha256 = _read_all(root, paths, workers, label, "cropped" if crop is not None else "decoded", row)
        out.flush()
        del out
    meta = {"n": n, "size": list(size), "failed": failed, "sha256": sha256}
    if crop is not None:
        from tasks.faces.crop import write_records

        write_records(stem.with_suffix(".faces.parquet"), keys, paths, records)
        meta["detect_seconds"] = sum(r.detect_ms for r in records if r is not None) / 1000
    # The metadata is written last: its presence means the array is complete.
    write_text(stem.with_suffix(".json"), json.dumps(meta))


def _scan(root: Path, paths: list[str], size: tuple[int, int], workers: int, label: str, cropped: bool) -> dict:
    """What a build would record (which files fail, every file's sha256), in memory only."""

    def row(i: int, data: bytes) -> None:
        if cropped:  # a crop decodes the whole photo (FaceCrop.apply); finding the face cannot fail
            with Image.open(io.BytesIO(data)) as im:
                im.convert("RGB")
        else:
            decode(data, size)

    failed, sha256 = _read_all(root, paths, workers, label, "checked (a dry run: not cached)", row)
    return {"n": len(paths), "size": list(size), "failed": failed, "sha256": sha256}


def _read_all(root: Path, paths: list[str], workers: int, label: str, what: str, row) -> tuple[dict, list]:
    """Read every file once, hash it and hand its bytes to `row(i, data)`; the files that could
    not be read or decoded (by index, why) and each file's sha256 ("" where unread)."""
    n, started = len(paths), time.monotonic()
    failed: dict[int, str] = {}
    sha256 = [""] * n

    def work(i: int) -> None:
        try:
            data = (root / paths[i]).read_bytes()  # read once: hashed, then decoded
            sha256[i] = hashlib.sha256(data).hexdigest()
            row(i, data)
        except FileNotFoundError:
            failed[i] = "missing file"
        except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for bad files
            failed[i] = f"unreadable image ({type(err).__name__}: {err})"

    # PIL releases the GIL while decoding and resizing, so threads use every core.
    last = started
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        for done, _ in enumerate(pool.map(work, range(n)), start=1):
            now = time.monotonic()
            if now - last >= 5 or done == n:
                last = now
                rate = done / max(now - started, 1e-9)
                print(f"[cache] {label}: {what} {done}/{n} ({rate:.0f} img/s)", file=sys.stderr, flush=True)
    return failed, sha256
