"""`explain --ray`: one Ray task per fold model computes its Grad-CAMs on the slot resource.

The tasks run like `blend --reinfer`'s (orchestrator/cluster/fold_tasks.py); each returns
the CAMs and the images it explained, and the driver measures face focus and draws.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from orchestrator.analysis.saliency.selection import FoldJob, JobCams
from orchestrator.cluster.fold_tasks import job_checkpoint, job_weights, run_fold_tasks
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


def ray_runner(address: str | None):
    """A runner for explain_run.explain: yields (job, JobCams or the task's error) as tasks finish."""

    def run(spec: Experiment, work, _dataset):
        from orchestrator.analysis.saliency.selection import ExplainError

        spec_dict = spec.model_dump(mode="json")
        calls = {job: (spec_dict, job.model, job.fold, str(job.out_dir), picks, job_checkpoint(job.out_dir))
                 for job, picks in work}
        yield from run_fold_tasks(spec, address, explain_task, calls, ExplainError)

    return run
