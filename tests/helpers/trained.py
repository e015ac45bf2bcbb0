"""A small experiment trained for real, without Ray: prepare, every job in this process (one
torch thread), gather and blend, as `run` and `blend` leave it."""
from __future__ import annotations

from pathlib import Path

import torch

from tasks.spec.experiment import Experiment


def train_and_blend(spec: Experiment, *blend_args: str) -> Path:
    """results/<name>/ with every job finished, gathered and blended; returns the folder."""
    from orchestrator import blend
    from orchestrator.cluster.gather import gather
    from orchestrator.cluster.plan import plan_jobs
    from tasks.data.preparation import prepare, rows_hash
    from tasks.job import train_job
    from tasks.job_io import Job

    dataset = prepare(spec, verbose=False)
    plans = plan_jobs(spec, rows_hash(spec, dataset))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: more threads only fight over a shared machine's cores
    try:
        for plan in plans:
            train_job(spec, Job(plan.model, plan.fold, plan.out_dir, repeat=plan.repeat), dataset=dataset,
                      log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    gather(spec.out_dir, plans, dataset.train["image_key"], dataset.eval["image_key"])
    assert blend.main(["--results", str(spec.out_dir), *blend_args]) == 0
    return spec.out_dir
