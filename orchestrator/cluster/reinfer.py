"""Re-run test inference from the saved fold models on the cluster, then re-gather.

For when a job's test logits are missing or flip TTA should change: one Ray task per
finished job, pinned to a slot like a training worker, computes the eval logits from the
job's best.pt (tasks.train.fold_models) and returns them; the driver rewrites the job's test.parquet and
gathers results/<name>/test.parquet again. The tasks and where they find the weights:
orchestrator/cluster/fold_tasks.py, shared with `explain --ray`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.analysis.pseudo_labels.outputs import saved_hashes
from orchestrator.analysis.results_folder import rows_hash_as_run
from orchestrator.cluster.fold_tasks import job_checkpoint, job_weights, run_fold_tasks
from orchestrator.cluster.gather import Gathered, gather
from orchestrator.cluster.plan import JobPlan, plan_jobs
from tasks.data.preparation import load_dataset
from tasks.errors import UserError
from tasks.job_io import Job, unfinished_reason, write_test_logits
from tasks.lock import experiment_lock
from tasks.log import Log, to_stdout
from tasks.spec.experiment import Experiment


class ReinferError(UserError):
    """Re-inference could not start, or some fold models failed (their old logits are kept)."""


@dataclass(frozen=True)
class Reinferred:
    """One task's summary: what it wrote, where and how fast."""

    job_id: str
    model: str
    fold: int
    images: int
    tta: bool
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
    logits: np.ndarray  # (eval images, 18), info.csv order


def reinfer_task(spec_dict: dict, job_id: str, model: str, fold: int, out_dir: str, tta: bool,
                 checkpoint: dict | None) -> TaskOutput:
    """The Ray task body: runs on the node holding the slot and returns the logits."""
    import ray

    from tasks.train.device import select_device
    from tasks.train.fold_models import infer_test

    started = time.monotonic()
    spec = Experiment.model_validate(spec_dict)
    with job_weights(Path(out_dir) / "best.pt", checkpoint) as weights:
        logits = infer_test(spec, model, fold, weights, tta)
    device = select_device(spec.train_for(spec.model(model))).device
    summary = Reinferred(job_id, model, fold, len(logits), tta, str(device), ray.util.get_node_ip_address(),
                         time.monotonic() - started)
    return TaskOutput(summary, logits)


def finished_jobs(plans: list[JobPlan], exp_dir: Path) -> list[JobPlan]:
    """The planned jobs that finished: the fold models there are weights for."""
    done = [p for p in plans if not unfinished_reason(p.out_dir, needs=("result.json", "oof.parquet"))]
    if not done:
        raise ReinferError(f"{exp_dir}/jobs: no finished job of this spec (model settings, data, folds and "
                           "seed as in spec.yaml with any --set); run the experiment first, and do not "
                           "--set train or model fields with --reinfer")
    return done


def reinfer(spec: Experiment, exp_dir: Path, tta: bool | None = None, address: str | None = None,
            log: Log = to_stdout) -> ReinferSummary:
    """Rewrite every finished job's test logits on Ray, then re-gather the experiment's tables.

    `tta` None keeps each model's train.tta_flip. Jobs that fail keep their old test.parquet
    and nothing is gathered; ReinferError names them.
    """
    started = time.monotonic()
    exp_dir = exp_dir.resolve()
    if spec.name != exp_dir.name:
        raise ReinferError(f"{exp_dir}: spec.yaml names the experiment {spec.name!r}; its jobs are only "
                           f"found in results/{spec.name}/ (do not --set name with --reinfer)")
    spec = spec.model_copy(update={"results_dir": exp_dir.parent}).resolved()
    with experiment_lock(spec.out_dir):  # a run on the same experiment would race for test.parquet
        return _reinfer_locked(spec, exp_dir, tta, address, log, started)


def _reinfer_locked(spec: Experiment, exp_dir: Path, tta: bool | None, address: str | None, log: Log,
                    started: float) -> ReinferSummary:
    dataset = load_dataset(spec, verbose=False)
    rows = rows_hash_as_run(exp_dir, dataset)
    plans = plan_jobs(spec, rows, saved_hashes(spec))
    done = finished_jobs(plans, exp_dir)
    tta_of = {p.job_id: p.train.tta_flip if tta is None else tta for p in done}
    log(f"re-inferring {len(done)} fold models over {len(dataset.eval)} eval images "
        f"(flip TTA {_describe(set(tta_of.values()))})")
    results, failures = _run_tasks(spec, done, tta_of, address, log, rows, dataset)
    if failures:
        raise ReinferError(f"{len(failures)} of {len(done)} fold models failed; their old test logits are kept "
                           "and the experiment's test.parquet was not gathered again:\n" + "\n".join(failures))
    gathered = gather(spec.out_dir, plans, dataset.train["image_key"], dataset.eval["image_key"])
    log(f"gathered {gathered.test_rows} test rows of {len(gathered.models)} models -> "
        f"{spec.out_dir / 'test.parquet'}")
    return ReinferSummary(tuple(results), gathered, time.monotonic() - started)


def _run_tasks(spec: Experiment, done: list[JobPlan], tta_of: dict[str, bool], address: str | None,
               log: Log, rows_hash: str, dataset) -> tuple[list[Reinferred], list[str]]:
    """One task per fold model; writes each job's test.parquet as its task finishes and prints
    it. Returns summaries and failures."""
    results, failures = [], []
    by_id = {p.job_id: p for p in done}
    calls = {p.job_id: (spec.model_dump(mode="json"), p.job_id, p.model, p.fold, str(p.out_dir), tta_of[p.job_id],
                        job_checkpoint(p.out_dir)) for p in done}

    def started(slots: int) -> None:
        log(f"  {len(calls)} tasks, {slots} at a time")

    for job_id, out in run_fold_tasks(spec, address, reinfer_task, calls, ReinferError, started):
        plan = by_id[job_id]
        if isinstance(out, BaseException):
            failures.append(f"  {plan.job_id}: {type(out).__name__}: {str(out).strip()[:500]}")
            log(f"  [{len(results) + len(failures)}/{len(done)}] FAILED {plan.job_id}")
            continue
        write_test_logits(Job(plan.model, plan.fold, plan.out_dir), spec, dataset.eval, out.logits, rows_hash)
        r = out.summary
        results.append(r)
        log(f"  [{len(results) + len(failures)}/{len(done)}] {r.job_id}: {r.images} images, "
            f"flip TTA {'on' if r.tta else 'off'}, {r.device} on {r.node}, {r.seconds:.1f}s")
    return results, failures


def _describe(values: set[bool]) -> str:
    return "per model" if len(values) > 1 else ("on" if values.pop() else "off")
