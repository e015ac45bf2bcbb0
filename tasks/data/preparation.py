"""Everything before training: index, relabel, decode-once cache, checks, folds, manifest.

Problems anywhere in the data are gathered and reported together before any job starts.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml

from tasks.atomic import atomic_path, write_text
from tasks.data.cache import ImageCache, ensure_cache
from tasks.data.dataset import DataError, Problem, describe, fingerprint, index_eval, index_train
from tasks.data.duplicates import find_duplicates, settle_duplicates
from tasks.faces.outputs import write_faces
from tasks.data.folds import load_folds, make_repeated_folds, save_folds
from tasks.pseudo.rows import check_source_rows
from tasks.data.relabel import apply_relabel
from tasks.spec.experiment import Experiment, stable_hash

if TYPE_CHECKING:
    from tasks.faces.crop import FaceCrop

PACKAGES = ("torch", "torchvision", "timm", "ray", "albumentations", "numpy", "pandas",
            "scikit-learn", "pyarrow", "pydantic")


@dataclass(frozen=True)
class Dataset:
    """The indexed, checked data of one experiment, ready for jobs."""

    train: pd.DataFrame  # usable training images with labels (after relabel)
    eval: pd.DataFrame  # every eval image, in info.csv's order
    train_cache: ImageCache
    eval_cache: ImageCache
    data_hash: str  # identity of the files, the relabel file and the cache size
    skipped: tuple[Problem, ...]  # what on_bad_image=skip left out (or blanked, for eval)
    linked: tuple[tuple[str, ...], ...] = ()  # people sharing photos (on_duplicate=keep/drop): one fold each


def load_dataset(spec: Experiment, verbose: bool = True, write_cache: bool = True) -> Dataset:
    """Index and cache the data; DataError lists every problem unless told to skip them.
    Without `write_cache` (a dry run) the same dataset, its hashes and problems, with nothing
    written: an image cache not built yet is only read through (its caches have no array)."""
    root, data = spec.data.root, spec.data
    train, evals = index_train(root), index_eval(root)
    images = train.images
    relabel_hash = ""
    if data.relabel is not None:
        images, summary = apply_relabel(images, data.relabel)
        relabel_hash = stable_hash(Path(data.relabel).read_text())
        if verbose:
            print(summary.text(data.relabel), file=sys.stderr)
    crop = face_crop(spec, root, [images, evals.images])
    caches = [ensure_cache(root, list(f["image_key"]), list(f["path"]), data.cache_size, data.cache_dir,
                           data.decode_workers, label=label, crop=crop, write=write_cache)
              for f, label in ((images, "train"), (evals.images, "eval"))]
    problems = [*train.problems, *evals.problems, *caches[0].problems, *caches[1].problems]
    dups = find_duplicates(images, caches[0])
    stops = []
    if problems and data.on_bad_image == "stop":
        stops.append(f"{len(problems)} problem(s) in {root}:\n{describe(problems)}\n"
                     "Fix them, or run with --set data.on_bad_image=skip to leave them out.")
    if len(dups.across) and data.on_duplicate == "stop":
        stops.append(dups.stop_message())
    if stops:  # both kinds at once: each fix would otherwise cost another full cache build
        raise DataError("\n".join(stops))
    if problems and verbose:
        print(f"data.on_bad_image=skip: leaving out {len(problems)} problem(s):\n{describe(problems)}",
              file=sys.stderr)
    usable = images[caches[0].ok[caches[0].rows(images["image_key"])]].reset_index(drop=True)
    settled = settle_duplicates(usable, dups, data.on_duplicate)
    if settled.note and verbose:
        print(settled.note, file=sys.stderr)
    data_hash = stable_hash({"files": fingerprint(root, list(images["path"]) + list(evals.images["path"])),
                             "relabel": relabel_hash, "size": list(data.cache_size),
                             "skipped": sorted(p.file for p in problems), **settled.identity,
                             # only when set: experiments without a face crop keep their hashes
                             **({"face": crop.identity} if crop else {})})
    return Dataset(settled.images, evals.images, caches[0], caches[1], data_hash, tuple(problems), settled.linked)


def face_crop(spec: Experiment, root: Path, frames: list[pd.DataFrame]) -> "FaceCrop | None":
    """data.face as the cache needs it; the boxes file checked against every image (train, eval)."""
    from tasks.faces.boxes import read_boxes
    from tasks.faces.crop import face_crop as make_crop

    face = spec.data.face
    if face is None:
        return None
    boxes, digest = {}, ""
    if face.boxes is not None:
        paths = {k: p for f in frames for k, p in zip(f["image_key"], f["path"])}
        boxes, digest = read_boxes(face.boxes, root, paths)
    return make_crop(face, boxes, digest)


def prepare(spec: Experiment, verbose: bool = True, force: bool = False) -> Dataset:
    """Load the data, write folds and the manifest under results/<name>/.

    Refuses (ReplaceError) to replace the folds of an experiment whose finished jobs were made
    with other data or folds, unless `force`: those results would no longer blend; and (PseudoError)
    a round 2 whose pseudo.source has other folds or eval photos. Both before writing anything.
    """
    started = time.monotonic()
    dataset = load_dataset(spec, verbose)
    out = spec.out_dir
    if not force:
        check_replace(spec, dataset)
    folds = make_repeated_folds(dataset.train, spec.folds.n_splits, spec.folds.seed, spec.folds.repeats,
                                dataset.linked)
    if spec.pseudo is not None:  # a round 2 whose round 1 held out other people is refused before any write
        check_source_rows(spec, folds, dataset.eval["image_key"].to_numpy())
    save_folds(out / "folds.parquet", folds, folds_meta(spec, dataset))
    write_text(out / "spec.yaml", yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    write_text(out / "manifest.json", json.dumps(manifest(spec, dataset), indent=2))
    if dataset.skipped:
        with atomic_path(out / "skipped_images.csv") as tmp:
            pd.DataFrame([p.__dict__ for p in dataset.skipped]).to_csv(tmp, index=False)
    if spec.data.face is not None:
        faces = write_faces(out, {"train": dataset.train_cache, "eval": dataset.eval_cache})
        if verbose:
            print(faces.text(spec.data.face.fallback), file=sys.stderr)
    if verbose:
        people = dataset.train["person"].nunique()
        print(f"prepared {spec.name}: {people} people, {len(dataset.train)} training images, "
              f"{len(dataset.eval)} eval images, {spec.folds.n_splits} folds"
              f"{f' x {spec.folds.repeats} repeats' if spec.folds.repeats > 1 else ''} in "
              f"{time.monotonic() - started:.1f}s -> {out}", file=sys.stderr)
    return dataset


class ReplaceError(DataError):
    """Preparing again would orphan an experiment's finished results."""


def check_replace(spec: Experiment, dataset: Dataset) -> None:
    """ReplaceError if results/<name>/ has finished jobs made with another rows hash."""
    path = spec.out_dir / "manifest.json"
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text()).get("rows_hash")
    except (OSError, ValueError):
        before = None
    finished = sorted(spec.out_dir.glob("jobs/*/result.json"))
    if not finished or before == rows_hash(spec, dataset):
        return
    raise ReplaceError(
        f"{spec.out_dir} holds {len(finished)} finished job(s) made with other data, folds or seed "
        f"(manifest.json rows_hash {before}, now {rows_hash(spec, dataset)}); preparing would replace its "
        f"folds.parquet and manifest.json and those results could no longer be blended. Use a new name "
        f"(--set name={spec.name}-2) or pass --force to replace them.")


def folds_meta(spec: Experiment, dataset: Dataset) -> dict[str, str]:
    meta = {"data_hash": dataset.data_hash, "n_splits": str(spec.folds.n_splits), "seed": str(spec.folds.seed)}
    return meta | ({"repeats": str(spec.folds.repeats)} if spec.folds.repeats > 1 else {})


def read_folds(spec: Experiment, dataset: Dataset) -> pd.DataFrame:
    """The saved folds; refuses folds made for other data or another fold setting."""
    path = spec.out_dir / "folds.parquet"
    if not path.exists():
        raise DataError(f"{path} does not exist; run `python -m orchestrator.prepare` first")
    folds, meta = load_folds(path)
    if meta != folds_meta(spec, dataset):
        raise DataError(f"{path} was made for other data or fold settings ({meta}); prepare again")
    return folds


def manifest(spec: Experiment, dataset: Dataset) -> dict:
    return {"experiment": spec.name, "spec_hash": spec.spec_hash(), "shared_hash": spec.shared_hash(),
            "data_hash": dataset.data_hash, "rows_hash": rows_hash(spec, dataset), "git": git_revision(),
            "packages": {p: _version(p) for p in PACKAGES}, "python": sys.version.split()[0],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def git_revision() -> str:
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def rows_hash(spec: Experiment, dataset: Dataset) -> str:
    """What makes logits rows of different models comparable: same data, folds and labels."""
    return stable_hash([spec.shared_hash(), dataset.data_hash])
