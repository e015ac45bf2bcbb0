"""`explain --ray`: one Ray task per fold model computes its Grad-CAMs on the slot resource.

Mirrors `blend --reinfer` (orchestrator/cluster/reinfer.py): a task holds a slot like a
training worker, reads the images from its own node's cache and the weights from results/
when its node sees them, else from the job's Train checkpoint; it returns the CAMs and the
images it explained, and the driver measures face focus and draws (explain_run).
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pandas as pd

from orchestrator.analysis.saliency.selection import FoldJob, JobCams
from orchestrator.cluster.reinfer import job_weights, task_options
from tasks.spec.experiment import Experiment


def explain_task(spec_dict: dict, model: str, fold: int, out_dir: str, picks: pd.DataFrame,
                 checkpoint: dict | None) -> JobCams:
    """The task body: on the node holding the slot."""
    from orchestrator.analysis.saliency.selection import explain_job
    from tasks.data.preparation import load_dataset

    spec = Experiment.model_validate(spec_dict)
    dataset = load_dataset(spec, verbose=False)
    job = FoldJob(model, fold, Path(out_dir))
    with job_weights(Path(out_dir) / "best.pt", checkpoint) as weights:
        return explain_job(spec, job, picks, dataset, weights)


def _checkpoint(out_dir: Path) -> dict | None:
    path = out_dir / "job.json"
    meta = json.loads(path.read_text()) if path.is_file() else {}
    return {k: meta[k] for k in ("checkpoint", "storage")} if meta.get("checkpoint") else None


def ray_runner(address: str | None):
    """A runner for explain_run.explain: yields (job, JobCams or the task's error) as tasks finish."""

    def run(spec: Experiment, work, _dataset):
        import ray

        from orchestrator.analysis.saliency.selection import ExplainError
        from orchestrator.cluster.session import ResourceError, check_resources, ray_session

        with contextlib.nullcontext() if ray.is_initialized() else ray_session(spec, address):
            try:
                check_resources(spec.resources)
            except ResourceError as err:
                raise ExplainError(str(err)) from None
            remote = ray.remote(explain_task).options(**task_options(spec.resources), max_retries=1)
            spec_dict = spec.model_dump(mode="json")
            pending = {remote.remote(spec_dict, job.model, job.fold, str(job.out_dir), picks,
                                     _checkpoint(job.out_dir)): job for job, picks in work}
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ref)
                try:
                    yield job, ray.get(ref)
                except Exception as err:  # a task's own error arrives wrapped in RayTaskError
                    yield job, getattr(err, "cause", None) or err

    return run
