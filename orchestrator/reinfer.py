"""Re-run test inference from the saved fold models on the cluster, then re-gather.

For when a job's test logits are missing or flip TTA should change: one Ray task per
finished job, pinned to a slot like a training worker, rewrites the job's test.parquet from
its best.pt (tasks.infer); then results/<name>/test.parquet is gathered again. Tasks get
the small spec and paths, never arrays: they read the weights and the eval images from the
paths and write the logits beside the weights, so results/ must be on a filesystem every
node sees (it always is on an embedded local Ray).
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.gather import Gathered, gather
from orchestrator.oof import BlendError
from orchestrator.plan import JobPlan, plan_jobs
from orchestrator.ray_jobs import worker_resources
from orchestrator.run import absolute
from tasks.job_io import Job
from tasks.prepare import load_dataset, rows_hash
from tasks.spec import Experiment, ResourcesSpec


class ReinferError(BlendError):
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


def reinfer_task(spec_dict: dict, job_id: str, model: str, fold: int, out_dir: str, tta: bool) -> Reinferred:
    """The Ray task body: runs on the node holding the slot; reads and writes through paths."""
    import ray

    from tasks.infer import reinfer_job

    spec = Experiment.model_validate(spec_dict)
    done = reinfer_job(spec, Job(model, fold, Path(out_dir)), tta)
    return Reinferred(job_id, model, fold, done.images, done.tta, done.device,
                      ray.util.get_node_ip_address(), done.seconds)


def finished_jobs(plans: list[JobPlan], exp_dir: Path) -> list[JobPlan]:
    """The planned jobs whose result.json exists: the fold models there are weights for."""
    done = [p for p in plans if (p.out_dir / "result.json").exists()]
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
    spec = absolute(spec.model_copy(update={"results_dir": exp_dir.parent}))
    dataset = load_dataset(spec, verbose=False)
    plans = plan_jobs(spec, rows_hash(spec, dataset))
    done = finished_jobs(plans, exp_dir)
    tta_of = {p.job_id: spec.train_for(spec.model(p.model)).tta_flip if tta is None else tta for p in done}
    print(f"re-inferring {len(done)} fold models over {len(dataset.eval)} eval images "
          f"(flip TTA {_describe(set(tta_of.values()))})", file=stream, flush=True)
    results, failures = _run_tasks(spec, done, tta_of, address, stream)
    if failures:
        raise ReinferError(f"{len(failures)} of {len(done)} fold models failed; their old test logits are kept "
                           "and the experiment's test.parquet was not gathered again:\n" + "\n".join(failures))
    gathered = gather(spec.out_dir, plans, dataset.train["image_key"], dataset.eval["image_key"])
    print(f"gathered {gathered.test_rows} test rows of {len(gathered.models)} models -> "
          f"{spec.out_dir / 'test.parquet'}", file=stream, flush=True)
    return ReinferSummary(tuple(results), gathered, time.monotonic() - started)


def _run_tasks(spec: Experiment, done: list[JobPlan], tta_of: dict[str, bool], address: str | None,
               stream) -> tuple[list[Reinferred], list[str]]:
    """One task per fold model; prints each as it finishes. Returns summaries and failures."""
    import ray

    from orchestrator.ray_run import ResourceError, check_resources, ray_session

    results, failures = [], []
    # A caller already connected (a script, a test) keeps its Ray; otherwise connect as `run` does.
    with contextlib.nullcontext() if ray.is_initialized() else ray_session(spec, address):
        try:
            slots = check_resources(spec.resources)
        except ResourceError as err:
            raise ReinferError(str(err)) from None
        remote = ray.remote(reinfer_task).options(**task_options(spec.resources), max_retries=1)
        spec_dict = spec.model_dump(mode="json")
        pending = {remote.remote(spec_dict, p.job_id, p.model, p.fold, str(p.out_dir), tta_of[p.job_id]): p
                   for p in done}
        print(f"  {len(pending)} tasks, {slots} at a time", file=stream, flush=True)
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            plan = pending.pop(ref)
            try:
                r = ray.get(ref)
            except Exception as err:  # a task's own error arrives wrapped in RayTaskError
                cause = getattr(err, "cause", None) or err
                failures.append(f"  {plan.job_id}: {type(cause).__name__}: {str(cause).strip()[:500]}")
                print(f"  [{len(results) + len(failures)}/{len(done)}] FAILED {plan.job_id}", file=stream, flush=True)
                continue
            results.append(r)
            print(f"  [{len(results) + len(failures)}/{len(done)}] {r.job_id}: {r.images} images, "
                  f"flip TTA {'on' if r.tta else 'off'}, {r.device} on {r.node}, {r.seconds:.1f}s",
                  file=stream, flush=True)
    return results, failures


def _describe(values: set[bool]) -> str:
    return "per model" if len(values) > 1 else ("on" if values.pop() else "off")
