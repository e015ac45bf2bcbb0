"""Re-run test inference from the saved fold models on the cluster, then re-gather.

For when a job's test logits are missing or flip TTA should change: one Ray task per
finished job, pinned to a slot like a training worker, computes the eval logits from the
job's best.pt (tasks.train.fold_models) and returns them; the driver rewrites the job's test.parquet and
gathers results/<name>/test.parquet again. Tasks get the small spec and paths: they read the
eval images on their own node, and the weights from results/ when their node sees it, else
from the job's final checkpoint in Train storage (recorded in job.json), so results/ need
not be on a filesystem every node sees.
"""
from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.analysis.pseudo_labels.outputs import saved_hashes
from orchestrator.cluster.gather import Gathered, gather
from orchestrator.cluster.plan import JobPlan, plan_jobs
from orchestrator.cluster.slots.config import worker_resources
from tasks.data.preparation import load_dataset, rows_hash
from tasks.errors import UserError
from tasks.job_io import Job, unfinished_reason, write_test_logits
from tasks.lock import experiment_lock
from tasks.spec.experiment import Experiment, ResourcesSpec


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


def task_options(res: ResourcesSpec) -> dict:
    """One task's resources: the slot (a GPU, or one unit of the custom resource) plus
    cpus_per_worker CPUs, as a training worker holds."""
    bundle = worker_resources(res)
    return {"num_cpus": bundle.pop("CPU"), "num_gpus": 1 if res.slot == "GPU" else 0, "resources": bundle}


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


@contextlib.contextmanager
def job_weights(local: Path, checkpoint: dict | None):
    """`local` if this node sees it, else best.pt fetched from the job's Train checkpoint."""
    if local.is_file() or not checkpoint:
        yield local
        return
    from orchestrator.cluster.storage import open_checkpoint
    from tasks.train.fold_models import InferError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            open_checkpoint(checkpoint["checkpoint"], checkpoint["storage"]).to_directory(tmp)
        except Exception as err:  # local and remote filesystems raise several types
            raise InferError(
                f"{local} is not on this node and the job's Train checkpoint {checkpoint['checkpoint']} could not "
                f"be read ({type(err).__name__}: {str(err)[:200]}). On a cluster, run with shared Train storage "
                "(--storage s3://... or MASKFOLD_STORAGE) or keep results/ on a filesystem every node sees.") from None
        yield Path(tmp) / "best.pt"


def checkpoint_of(plan: JobPlan) -> dict | None:
    """Where the driver collected the job's outputs from (None for jobs run before it was kept)."""
    path = plan.out_dir / "job.json"
    meta = json.loads(path.read_text()) if path.exists() else {}
    return {k: meta[k] for k in ("checkpoint", "storage")} if meta.get("checkpoint") else None


def finished_jobs(plans: list[JobPlan], exp_dir: Path) -> list[JobPlan]:
    """The planned jobs that finished: the fold models there are weights for."""
    done = [p for p in plans if not unfinished_reason(p.out_dir, needs=("result.json", "oof.parquet"))]
    if not done:
        raise ReinferError(f"{exp_dir}/jobs: no finished job of this spec (model settings, data, folds and "
                           "seed as in spec.yaml with any --set); run the experiment first, and do not "
                           "--set train or model fields with --reinfer")
    return done


def reinfer(spec: Experiment, exp_dir: Path, tta: bool | None = None, address: str | None = None,
            stream=None) -> ReinferSummary:
    """Rewrite every finished job's test logits on Ray, then re-gather the experiment's tables.

    `tta` None keeps each model's train.tta_flip. Jobs that fail keep their old test.parquet
    and nothing is gathered; ReinferError names them.
    """
    started, stream = time.monotonic(), stream or sys.stdout
    exp_dir = exp_dir.resolve()
    if spec.name != exp_dir.name:
        raise ReinferError(f"{exp_dir}: spec.yaml names the experiment {spec.name!r}; its jobs are only "
                           f"found in results/{spec.name}/ (do not --set name with --reinfer)")
    spec = spec.model_copy(update={"results_dir": exp_dir.parent}).resolved()
    with experiment_lock(spec.out_dir):  # a run on the same experiment would race for test.parquet
        return _reinfer_locked(spec, exp_dir, tta, address, stream, started)


def _reinfer_locked(spec: Experiment, exp_dir: Path, tta: bool | None, address: str | None, stream,
                    started: float) -> ReinferSummary:
    dataset = load_dataset(spec, verbose=False)
    plans = plan_jobs(spec, rows_hash(spec, dataset), saved_hashes(spec))
    done = finished_jobs(plans, exp_dir)
    tta_of = {p.job_id: p.train.tta_flip if tta is None else tta for p in done}
    print(f"re-inferring {len(done)} fold models over {len(dataset.eval)} eval images "
          f"(flip TTA {_describe(set(tta_of.values()))})", file=stream, flush=True)
    results, failures = _run_tasks(spec, done, tta_of, address, stream, rows_hash(spec, dataset), dataset)
    if failures:
        raise ReinferError(f"{len(failures)} of {len(done)} fold models failed; their old test logits are kept "
                           "and the experiment's test.parquet was not gathered again:\n" + "\n".join(failures))
    gathered = gather(spec.out_dir, plans, dataset.train["image_key"], dataset.eval["image_key"])
    print(f"gathered {gathered.test_rows} test rows of {len(gathered.models)} models -> "
          f"{spec.out_dir / 'test.parquet'}", file=stream, flush=True)
    return ReinferSummary(tuple(results), gathered, time.monotonic() - started)


def _run_tasks(spec: Experiment, done: list[JobPlan], tta_of: dict[str, bool], address: str | None,
               stream, rows_hash: str, dataset) -> tuple[list[Reinferred], list[str]]:
    """One task per fold model; writes each job's test.parquet as its task finishes and prints
    it. Returns summaries and failures."""
    import ray

    from orchestrator.cluster.session import ResourceError, check_resources, ray_session

    results, failures = [], []
    # A caller already connected (a script, a test) keeps its Ray; otherwise connect as `run` does.
    with contextlib.nullcontext() if ray.is_initialized() else ray_session(spec, address):
        try:
            slots = check_resources(spec.resources)
        except ResourceError as err:
            raise ReinferError(str(err)) from None
        remote = ray.remote(reinfer_task).options(**task_options(spec.resources), max_retries=1)
        spec_dict = spec.model_dump(mode="json")
        pending = {remote.remote(spec_dict, p.job_id, p.model, p.fold, str(p.out_dir), tta_of[p.job_id],
                                 checkpoint_of(p)): p for p in done}
        print(f"  {len(pending)} tasks, {slots} at a time", file=stream, flush=True)
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            plan = pending.pop(ref)
            try:
                out = ray.get(ref)
            except Exception as err:  # a task's own error arrives wrapped in RayTaskError
                cause = getattr(err, "cause", None) or err
                failures.append(f"  {plan.job_id}: {type(cause).__name__}: {str(cause).strip()[:500]}")
                print(f"  [{len(results) + len(failures)}/{len(done)}] FAILED {plan.job_id}", file=stream, flush=True)
                continue
            write_test_logits(Job(plan.model, plan.fold, plan.out_dir), spec, dataset.eval, out.logits, rows_hash)
            r = out.summary
            results.append(r)
            print(f"  [{len(results) + len(failures)}/{len(done)}] {r.job_id}: {r.images} images, "
                  f"flip TTA {'on' if r.tta else 'off'}, {r.device} on {r.node}, {r.seconds:.1f}s",
                  file=stream, flush=True)
    return results, failures


def _describe(values: set[bool]) -> str:
    return "per model" if len(values) > 1 else ("on" if values.pop() else "off")
