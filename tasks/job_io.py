"""A job's typed inputs and outputs and its files: checkpoint, weights, metrics, logits, result.

A job's identity is a hash of what determines its result: its model's settings, the data,
the folds, the fold and the seed. Its folder, results/<name>/jobs/<model>-fold<k>-<hash8>/,
carries that hash, so changing one model's settings reruns only that model's jobs and never
overwrites the results of the old settings. `planned_jobs` is the one place that names them:
the driver, re-inference and explain all find a spec's jobs through it.

Files in the job's folder (each written atomically):
  checkpoint.pt  last finished epoch (resume point)     best.pt      best weights (state_dict)
  metrics.csv    one row per epoch                       tb/          TensorBoard events (EpochBoard)
  oof.parquet    validation logits                       test.parquet eval logits
  result.json    written last: its presence means the job is complete
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from tasks.atomic import atomic_path, write_text
from tasks.logits import LogitsMeta, logits_table, write_logits
from tasks.metrics import Scores
from tasks.spec.experiment import Experiment, ModelSpec, TrainSpec, stable_hash
from tasks.spec.refit import REFIT_FOLD

if TYPE_CHECKING:
    from tasks.pseudo.fold_sets import PseudoSet


@dataclass(frozen=True)
class Job:
    model: str  # the model's name in the spec
    fold: int
    out_dir: Path
    seed: int | None = None  # None: the spec's seed
    job_id: str | None = None  # <model>-fold<k>-<hash>; None: the folder's name
    # The fold's pseudo-labelled eval photos when the spec has `pseudo:` (a remote worker gets
    # them from the driver); None: read results/<name>/pseudo/fold<k>.parquet.
    pseudo: PseudoSet | None = field(default=None, repr=False)
    repeat: int = 0  # which fold assignment (folds.repeats); 0 is the one every spec has
    # A refit job's epoch count (fold REFIT_FOLD: every person, tasks/spec/refit.py); None: a fold job
    epochs: int | None = None

    @property
    def key(self) -> str:
        return fold_key(self.model, self.fold, self.repeat)

    @property
    def id(self) -> str:
        return self.job_id or self.out_dir.name


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    epochs: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val: Scores
    lr: float
    seconds: float
    best_f1: float
    best_epoch: int
    images_per_second: float
    target: str = "all"  # what the scores are of: the 18 classes, or a specialist's attribute

    def row(self) -> dict[str, float]:
        flat = {k: v for k, v in asdict(self).items() if k not in ("val", "target")}
        return {**flat, **{f"val_{k}": v for k, v in self.val.as_dict().items()},
                "train_images": self.images_per_second * self.seconds}

    def line(self, key: str) -> str:
        what = "F1" if self.target == "all" else f"{self.target} F1"
        scores = (f"val {what} {self.val.macro_f1:.4f} acc {self.val.accuracy:.4f} (best {self.best_f1:.4f} "
                  f"@{self.best_epoch})" if self.val.macro_f1 == self.val.macro_f1 else "no one held out (refit)")
        return (f"[{key}] epoch {self.epoch}/{self.epochs} loss {self.train_loss:.4f} {scores} "
                f"{self.images_per_second:.0f} img/s {self.seconds:.1f}s")


@dataclass(frozen=True)
class JobResult:
    experiment: str
    model: str
    backbone: str
    fold: int
    seed: int
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    val: dict[str, float]  # Scores of the best weights on the fold's validation people
    val_loss: float
    train_images: int
    val_images: int
    test_images: int
    device: str
    seconds: float
    oof_path: str
    test_path: str
    weights_path: str
    metrics_path: str
    workers: int = 1  # data-parallel ranks that trained the job
    pseudo_images: int = 0  # pseudo-labelled eval photos among train_images' draws
    finished: float | None = None  # Unix time the job ended; None in results written before it was kept
    repeat: int = 0  # the fold assignment (folds.repeats) the fold belongs to
    # train.target: "all", or a specialist's attribute, whose scores `val` then holds (macro F1 of that
    # attribute alone; the others' F1 NaN)
    target: str = "all"

    @classmethod
    def read(cls, out_dir: Path) -> JobResult:
        """Load a job's result; its file paths point into `out_dir`, wherever the job ran."""
        fields = json.loads((Path(out_dir) / "result.json").read_text())
        return cls(**(fields | job_paths(Path(out_dir))))


@dataclass(frozen=True)
class TrainState:
    epoch: int = 0  # epochs finished
    best_f1: float = -1.0
    best_epoch: int = 0
    stale: int = 0  # epochs since the best
    best_weights: dict = field(default_factory=dict, repr=False)
    history: tuple[dict, ...] = ()

    def after_epoch(self, epoch: int, f1: float, model: torch.nn.Module) -> TrainState:
        if f1 > self.best_f1:
            best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            return replace(self, epoch=epoch, best_f1=f1, best_epoch=epoch, stale=0, best_weights=best)
        return replace(self, epoch=epoch, stale=self.stale + 1)

    def after_unvalidated_epoch(self, epoch: int, model: torch.nn.Module) -> TrainState:
        """A refit job's epoch: nothing to judge it by, so the latest weights are the ones kept."""
        latest = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return replace(self, epoch=epoch, best_epoch=epoch, stale=0, best_weights=latest)


def save_checkpoint(out_dir: Path, model, optimizer, scheduler, scaler, state: TrainState, ema=None) -> None:
    blob = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "scaler": scaler.state_dict(), "state": {**asdict(state), "history": list(state.history)}}
    if ema is not None:  # the moving average goes on from here when the job resumes
        blob["ema"] = ema.state_dict()
    with atomic_path(out_dir / "checkpoint.pt") as tmp:
        torch.save(blob, tmp)


def load_checkpoint(out_dir: Path, model, optimizer, scheduler, scaler, ema=None) -> TrainState:
    """Restore the last finished epoch if there is one; a fresh state otherwise."""
    path = out_dir / "checkpoint.pt"
    if not path.exists():
        return TrainState()
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(blob["scheduler"])
    scaler.load_state_dict(blob["scaler"])
    if ema is not None:
        ema.load_state_dict(blob["ema"])
    saved = blob["state"]
    return TrainState(**{**saved, "history": tuple(saved["history"])})


def save_weights(out_dir: Path, model) -> Path:
    with atomic_path(out_dir / "best.pt") as tmp:
        torch.save(copy.deepcopy(model.state_dict()), tmp)
    return out_dir / "best.pt"


def write_metrics(out_dir: Path, history: tuple[dict, ...]) -> None:
    with atomic_path(out_dir / "metrics.csv") as tmp:
        pd.DataFrame(list(history)).to_csv(tmp, index=False)


class EpochBoard:
    """The job's TensorBoard events in out_dir/tb/: one writer for the job's life, every
    metrics.csv column per epoch. A resumed job reopens it at its resume point, so its
    curves continue (events past that point, from the attempt that died, are purged)."""

    def __init__(self, out_dir: Path, resume_epoch: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out_dir / "tb"), purge_step=resume_epoch + 1 if resume_epoch else None)

    def log(self, row: dict) -> None:
        for key, value in row.items():
            if key not in ("epoch", "epochs"):
                self.writer.add_scalar(tensorboard_tag(key), value, int(row["epoch"]))
        self.writer.flush()  # the epoch's checkpoint ships tb/ as it is on disk

    def close(self) -> None:
        self.writer.close()


def tensorboard_tag(column: str) -> str:
    """metrics.csv column -> TensorBoard tag: val_macro_f1 -> val/macro_f1, lr -> train/lr."""
    for prefix in ("val", "train"):
        if column.startswith(prefix + "_"):
            return f"{prefix}/{column[len(prefix) + 1:]}"
    return f"train/{column}"


def logits_meta(spec: Experiment, model: str, rows_hash: str) -> LogitsMeta:
    """What a model's logits files declare: the rows, and its target (a specialist's width)."""
    return LogitsMeta.of_target(rows_hash, spec.train_for(spec.model(model)).target)


def write_job_logits(job: Job, spec, val_rows: pd.DataFrame, oof, eval_rows: pd.DataFrame, test,
                     rows_hash: str) -> None:
    meta = logits_meta(spec, job.model, rows_hash)
    common = {"experiment": spec.name, "model": job.model, "fold": job.fold}
    oof_frame = val_rows[["image_key", "person", "label"]].rename(columns={"label": "target"})
    oof_frame = oof_frame.assign(**common, split="oof")
    write_logits(job.out_dir / "oof.parquet", logits_table(oof_frame, oof, meta))
    write_test_logits(job, spec, eval_rows, test, rows_hash)


def job_paths(out_dir: Path) -> dict[str, str]:
    return {"oof_path": str(out_dir / "oof.parquet"), "test_path": str(out_dir / "test.parquet"),
            "weights_path": str(out_dir / "best.pt"), "metrics_path": str(out_dir / "metrics.csv")}


def write_test_logits(job: Job, spec, eval_rows: pd.DataFrame, test, rows_hash: str) -> Path:
    """The job's eval logits as its test.parquet; an earlier file stays until this one is complete."""
    frame = eval_rows[["image_key"]].assign(experiment=spec.name, model=job.model, fold=job.fold,
                                             split="test", person=None, target=None)
    path = job.out_dir / "test.parquet"
    write_logits(path, logits_table(frame, test, logits_meta(spec, job.model, rows_hash)))
    return path


# What a finished job must hold for later steps (gather, blend, re-inference) to use it.
REQUIRED_OUTPUTS = ("result.json", "oof.parquet", "test.parquet", "best.pt", "metrics.csv")
REFIT_OUTPUTS = ("result.json", "test.parquet", "best.pt", "metrics.csv")  # a refit job has no OOF rows


def unfinished_reason(out_dir: Path, needs: tuple[str, ...] | None = None) -> str | None:
    """None if `out_dir` holds a finished job's outputs, all present and readable; else why not.
    Default `needs`: REQUIRED_OUTPUTS, or REFIT_OUTPUTS for a refit job (its result says so).

    The one test of "finished": a job is cached or gathered only if it passes, so a lost or
    damaged output makes the job run again instead of failing every later step. Re-inference
    `needs` less: it rewrites test.parquet and can fetch best.pt from Train storage.
    """
    from tasks.logits import LogitsError, check_logits_file

    out_dir = Path(out_dir)
    needs = needs or (REFIT_OUTPUTS if _is_refit(out_dir) else REQUIRED_OUTPUTS)
    missing = [name for name in needs if not (out_dir / name).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        JobResult.read(out_dir)
    except (ValueError, TypeError, OSError) as err:
        return f"result.json unreadable ({type(err).__name__}: {err})"
    for name in [n for n in ("oof.parquet", "test.parquet") if n in needs]:
        try:
            if check_logits_file(out_dir / name) == 0:
                return f"{name} has no rows"
        except (OSError, ValueError, LogitsError) as err:
            return f"{name} unreadable ({type(err).__name__}: {str(err)[:120]})"
    if "best.pt" in needs and (out_dir / "best.pt").stat().st_size == 0:
        return "best.pt is empty"
    return None


def _is_refit(out_dir: Path) -> bool:
    try:
        return json.loads((out_dir / "result.json").read_text()).get("fold") == REFIT_FOLD
    except (OSError, ValueError, AttributeError):
        return False


def write_result(out_dir: Path, result: JobResult) -> None:
    write_text(out_dir / "result.json", json.dumps(asdict(result), indent=2))


def fold_key(model: str, fold: int, repeat: int = 0) -> str:
    """How a fold model is named on the console: `<model>/fold<k>`, `<model>/r<r>/fold<k>`;
    a refit model `<model>/refit`."""
    if fold == REFIT_FOLD:
        return f"{model}/refit"
    return f"{model}/fold{fold}" if repeat == 0 else f"{model}/r{repeat}/fold{fold}"


def job_folder_name(model: str, fold: int, repeat: int, digest: str) -> str:
    return f"{model}-fold{fold}-{digest[:8]}" if repeat == 0 else f"{model}-r{repeat}-fold{fold}-{digest[:8]}"


@dataclass(frozen=True)
class PlannedJob:
    """One (model, repeat, fold) job of a spec: its identity and where its outputs are."""

    model: str
    fold: int
    job_hash: str
    out_dir: Path  # results/<name>/jobs/<job_id>
    repeat: int = 0

    @property
    def job_id(self) -> str:
        return self.out_dir.name


def job_hash(spec: Experiment, model: ModelSpec, train: TrainSpec, fold: int, rows_hash: str,
             pseudo: str | None = None, repeat: int = 0) -> str:
    """What determines the job's result. The loader's worker count does not; the fold's pseudo
    set (its hash, when the spec has `pseudo:`) does."""
    weights = {"backbone": model.backbone, "pretrained": model.pretrained,
               "pretrained_path": str(model.pretrained_path) if model.pretrained_path else None}
    identity = {"rows": rows_hash, "model": weights, "train": train.identity(),
                "fold": fold, "seed": spec.seed}
    if spec.resources.workers_per_job > 1:  # per-worker batches: the world size changes the result
        identity["workers"] = spec.resources.workers_per_job
    if pseudo is not None:  # only then: experiments without pseudo labels keep their job ids
        identity["pseudo"] = pseudo
    if repeat:  # repeat 0 is every spec's one fold assignment: its jobs keep their ids
        identity["repeat"] = repeat
    return stable_hash(identity)


def planned_jobs(spec: Experiment, rows_hash: str, pseudo: dict[int, str] | None = None,
                 jobs_dir: Path | None = None) -> list[PlannedJob]:
    """Every job of `spec` on rows `rows_hash`, models in spec order, then repeats, then folds. `pseudo`:
    each fold's pseudo-set hash, needed exactly when the spec has `pseudo:`. `jobs_dir`: where
    the job folders are if not results/<name>/jobs (a results folder moved since its run)."""
    if (spec.pseudo is None) != (pseudo is None):
        raise ValueError("planned_jobs: pseudo hashes are needed exactly when the spec has `pseudo:`")
    jobs, jobs_dir = [], jobs_dir or spec.out_dir / "jobs"
    for model in spec.models:
        train = spec.train_for(model)
        for repeat in range(spec.folds.repeats):
            for fold in range(spec.folds.n_splits):
                digest = job_hash(spec, model, train, fold, rows_hash, pseudo[fold] if pseudo else None, repeat)
                folder = jobs_dir / job_folder_name(model.name, fold, repeat, digest)
                jobs.append(PlannedJob(model.name, fold, digest, folder, repeat))
    return jobs

