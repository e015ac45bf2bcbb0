"""Re-run OOF and test inference from the saved fold models on the cluster, then re-gather.

For when a job's test logits are missing or the TTA should change: one Ray task per finished
job, pinned to a slot like a training worker, computes the logits of the job's held-out rows
(its fold in folds.parquet) and of the eval images from the job's best.pt with one TTA
(tasks.train.fold_models) and returns them; the driver rewrites the job's oof.parquet,
test.parquet and result.json's scores, then gathers results/<name>/oof.parquet and test.parquet
again, so the blend is fitted on OOF logits made as the test logits it predicts from. The
tasks and where they find the weights: orchestrator/cluster/fold_tasks.py, shared with
`explain --ray`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from orchestrator.analysis.pseudo_labels.outputs import saved_hashes
from orchestrator.analysis.results_folder import rows_hash_as_run
from orchestrator.cluster.fold_tasks import job_checkpoint, job_weights, run_fold_tasks
from orchestrator.cluster.gather import Gathered, gather
from orchestrator.cluster.plan import JobPlan, plan_jobs
from tasks.data.preparation import load_dataset
from tasks.errors import UserError
from tasks.job import split_fold
from tasks.job_io import Job, JobResult, unfinished_reason, write_job_logits, write_result
from tasks.lock import experiment_lock
from tasks.log import Log, to_stdout
from tasks.spec.experiment import Experiment
from tasks.spec.techniques import Tta, resolve_tta


class ReinferError(UserError):
    """Re-inference could not start, or some fold models failed (their old logits are kept)."""


@dataclass(frozen=True)
class Reinferred:
    """One task's summary: what it wrote, where and how fast."""

    job_id: str
    model: str
    fold: int
    images: int  # eval images
    oof_images: int  # the fold's held-out training photos
    tta: str  # Tta.text()
    device: str
    node: str
    seconds: float


@dataclass(frozen=True)
class ReinferSummary:
    jobs: tuple[Reinferred, ...]
    gathered: Gathered
    seconds: float


@dataclass(frozen=True)
class TaskOutput:
    summary: Reinferred
    oof: np.ndarray  # (the fold's held-out photos, 18), in the order the driver gave them
    test: np.ndarray  # (eval images, 18), info.csv order


def reinfer_task(spec_dict: dict, job_id: str, model: str, fold: int, out_dir: str, tta: Tta,
                 checkpoint: dict | None, oof_keys: list[str]) -> TaskOutput:
    """The Ray task body: runs on the node holding the slot and returns the logits."""
    import ray

    from tasks.train.device import select_device
    from tasks.train.fold_models import infer_fold

    started = time.monotonic()
    spec = Experiment.model_validate(spec_dict)
    with job_weights(Path(out_dir) / "best.pt", checkpoint) as weights:
        logits = infer_fold(spec, model, fold, weights, oof_keys, tta)
    device = select_device(spec.train_for(spec.model(model))).device
    summary = Reinferred(job_id, model, fold, len(logits.test), len(logits.oof), tta.text(), str(device),
                         ray.util.get_node_ip_address(), time.monotonic() - started)
    return TaskOutput(summary, logits.oof, logits.test)


def finished_jobs(plans: list[JobPlan], exp_dir: Path) -> list[JobPlan]:
    """The planned jobs that finished: the fold models there are weights for."""
    done = [p for p in plans if not unfinished_reason(p.out_dir, needs=("result.json", "oof.parquet"))]
    if not done:
        raise ReinferError(f"{exp_dir}/jobs: no finished job of this spec (model settings, data, folds and "
                           "seed as in spec.yaml with any --set); run the experiment first, and do not "
                           "--set train or model fields with --reinfer")
    return done


def reinfer(spec: Experiment, exp_dir: Path, tta: Tta | None = None, address: str | None = None,
            log: Log = to_stdout) -> ReinferSummary:
    """Rewrite every finished job's OOF and test logits on Ray, then re-gather the experiment's tables.

    `tta` None keeps each model's own (train.tta, or flip as train.tta_flip says). Jobs that fail
    keep their old logits and nothing is gathered; ReinferError names them.
    """
    started = time.monotonic()
    exp_dir = exp_dir.resolve()
    if spec.name != exp_dir.name:
        raise ReinferError(f"{exp_dir}: spec.yaml names the experiment {spec.name!r}; its jobs are only "
                           f"found in results/{spec.name}/ (do not --set name with --reinfer)")
    spec = spec.model_copy(update={"results_dir": exp_dir.parent}).resolved()
    with experiment_lock(spec.out_dir):  # a run on the same experiment would race for the logits
        return _reinfer_locked(spec, exp_dir, tta, address, log, started)


def _reinfer_locked(spec: Experiment, exp_dir: Path, tta: Tta | None, address: str | None, log: Log,
                    started: float) -> ReinferSummary:
    dataset = load_dataset(spec, verbose=False)
    rows = rows_hash_as_run(exp_dir, dataset)
    plans = plan_jobs(spec, rows, saved_hashes(spec))
    done = finished_jobs(plans, exp_dir)
    tta_of = {p.job_id: resolve_tta(p.train) if tta is None else tta for p in done}
    texts = {t.text() for t in tta_of.values()}
    log(f"re-inferring {len(done)} fold models over their OOF rows and {len(dataset.eval)} eval images, "
        f"TTA {texts.pop() if len(texts) == 1 else 'per model'}")
    results, failures = _run_tasks(spec, done, tta_of, address, log, rows, dataset)
    if failures:
        raise ReinferError(f"{len(failures)} of {len(done)} fold models failed; their old logits are kept "
                           "and the experiment's oof.parquet and test.parquet were not gathered again:\n"
                           + "\n".join(failures))
    gathered = gather(spec.out_dir, plans, dataset.train["image_key"], dataset.eval["image_key"])
    log(f"gathered {gathered.oof_rows} OOF and {gathered.test_rows} test rows of {len(gathered.models)} models -> "
        f"{spec.out_dir / 'oof.parquet'}, test.parquet")
    return ReinferSummary(tuple(results), gathered, time.monotonic() - started)


def _run_tasks(spec: Experiment, done: list[JobPlan], tta_of: dict[str, Tta], address: str | None,
               log: Log, rows_hash: str, dataset) -> tuple[list[Reinferred], list[str]]:
    """One task per fold model; writes each job's logits as its task finishes and prints it.
    Returns summaries and failures."""
    results, failures = [], []
    by_id = {p.job_id: p for p in done}
    held_out = {p.job_id: split_fold(dataset, spec, p.fold, p.train)[1] for p in done}  # as the job validated
    calls = {p.job_id: (spec.model_dump(mode="json"), p.job_id, p.model, p.fold, str(p.out_dir), tta_of[p.job_id],
                        job_checkpoint(p.out_dir), held_out[p.job_id]["image_key"].tolist()) for p in done}

    def started(slots: int) -> None:
        log(f"  {len(calls)} tasks, {slots} at a time")

    for job_id, out in run_fold_tasks(spec, address, reinfer_task, calls, ReinferError, started):
        plan = by_id[job_id]
        if isinstance(out, BaseException):
            failures.append(f"  {plan.job_id}: {type(out).__name__}: {str(out).strip()[:500]}")
            log(f"  [{len(results) + len(failures)}/{len(done)}] FAILED {plan.job_id}")
            continue
        _write(Job(plan.model, plan.fold, plan.out_dir), spec, held_out[job_id], dataset.eval, out, rows_hash)
        r = out.summary
        results.append(r)
        log(f"  [{len(results) + len(failures)}/{len(done)}] {r.job_id}: {r.oof_images} OOF + {r.images} eval images, "
            f"TTA {r.tta}, {r.device} on {r.node}, {r.seconds:.1f}s")
    return results, failures


def _write(job: Job, spec: Experiment, val_rows, eval_rows, out: TaskOutput, rows_hash: str) -> None:
    """The job's new logits, then its result.json scored on the new OOF logits (the leaderboard's)."""
    from tasks.labels import target_labels
    from tasks.metrics import score_target
    from tasks.train.loop import eval_loss

    write_job_logits(job, spec, val_rows, out.oof, eval_rows, out.test, rows_hash)
    labels = val_rows["label"].to_numpy()
    target = spec.train_for(spec.model(job.model)).target  # a specialist is scored on its attribute
    result = JobResult.read(job.out_dir)
    write_result(job.out_dir, replace(result, val=score_target(labels, out.oof, target).as_dict(),
                                      val_loss=eval_loss(out.oof, target_labels(labels, target))))
