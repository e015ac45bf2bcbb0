"""The job matrix: every (model, fold) with its identity, state, resources and expected cost.

A job's identity (tasks.job_io.planned_jobs) is a hash of what determines its result; this
adds what only the driver needs: whether it must run, its cost and its expected time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tasks.job_io import JobResult, planned_jobs, unfinished_reason
from tasks.refits import planned_refits
from tasks.spec.experiment import Experiment, ModelSpec, TrainSpec
from tasks.spec.refit import REFIT_FOLD


@dataclass(frozen=True)
class JobPlan:
    job_id: str  # <model>-fold<k>-<hash>: folder name and Ray run name
    model: str  # the model's name in the spec
    backbone: str  # its timm name
    train: TrainSpec  # the model's resolved train settings (the experiment's, with its overrides)
    fold: int
    job_hash: str
    out_dir: Path  # results/<name>/jobs/<job_id>
    state: str  # "cached" (outputs complete and readable) or "to run"
    cost: float  # relative compute, for longest-first ordering
    estimate_s: float | None  # from earlier runs of this backbone and input size, if any
    note: str = ""  # why a job that had run must run again (an output lost or damaged)
    label: str = ""  # shown beside the id while it runs (a search trial's sampled values)
    repeat: int = 0  # the fold assignment (folds.repeats) its fold belongs to
    # A refit job's epoch count (fold REFIT_FOLD, every person; `train.epochs` shows it too)
    refit_epochs: int | None = None

    @property
    def cached(self) -> bool:
        return self.state == "cached"


@dataclass(frozen=True)
class Launched:
    """How each launched job ended: done, failed, interrupted (started) or not started."""

    states: dict[str, str]
    interrupted: bool  # Ctrl-C stopped the run

    def jobs(self, state: str) -> tuple[str, ...]:
        return tuple(job_id for job_id, s in self.states.items() if s == state)


def relative_cost(model: ModelSpec, train: TrainSpec) -> float:
    """Forward FLOPs at the input size x epochs, counted on the meta device (shapes only, no
    memory, no weights). Parameters x pixels, the stand-in before, ranked test_efficientnet below
    test_convnext, though on CPU it runs 1.14x slower (FLOPs: 2x). On GPUs, depthwise-heavy nets
    (EfficientNet) run slower than their FLOPs say; a model's measured epoch times replace this
    once one of its jobs has finished."""
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = timm.create_model(model.backbone, pretrained=False, num_classes=0)
        image = torch.empty(1, 3, *train.input_size)
    try:
        with FlopCounterMode(display=False) as counter:
            net(image)
        size = float(counter.get_total_flops())
    except (RuntimeError, NotImplementedError, TypeError, ValueError):  # an op with no meta kernel
        size = float(sum(p.numel() for p in net.parameters())) * train.input_size[0] * train.input_size[1]
    return size * train.epochs


def plan_jobs(spec: Experiment, rows_hash: str, pseudo: dict[int, str] | None = None) -> list[JobPlan]:
    """All jobs, longest first (big backbones before small ones shortens the makespan).
    `pseudo`: each fold's pseudo-set hash (orchestrator.analysis.pseudo_labels.labelling) when the spec has one."""
    history = seconds_by_backbone(spec.out_dir / "jobs")
    costs = {m.name: relative_cost(m, spec.train_for(m)) for m in spec.models}
    plans = []
    for job in planned_jobs(spec, rows_hash, pseudo):
        model = spec.model(job.model)
        train = spec.train_for(model)
        damaged = unfinished_reason(job.out_dir) if job.out_dir.exists() else "not run"
        estimate = history.get((model.backbone, tuple(train.input_size)))
        plans.append(JobPlan(job.job_id, model.name, model.backbone, train, job.fold, job.job_hash, job.out_dir,
                             "to run" if damaged else "cached", costs[model.name],
                             estimate * train.epochs if estimate else None,
                             "" if damaged in (None, "not run") else damaged, repeat=job.repeat))
    return sorted(plans, key=lambda p: (-p.cost, p.model, p.repeat, p.fold))


def plan_refits(spec: Experiment, rows_hash: str, folds: list[JobPlan]) -> list[JobPlan]:
    """The refit jobs (spec.refit) of the models whose fold jobs in `folds` all finished, longest first."""
    if spec.refit is None:
        return []
    finished: dict[str, list[JobResult]] = {}
    for plan in folds:
        if not unfinished_reason(plan.out_dir):
            finished.setdefault(plan.model, []).append(JobResult.read(plan.out_dir))
    history = seconds_by_backbone(spec.out_dir / "jobs")
    plans = []
    for refit in planned_refits(spec, rows_hash, finished):
        model = spec.model(refit.model)
        train = spec.train_for(model).model_copy(update={"epochs": refit.epochs})
        damaged = unfinished_reason(refit.out_dir) if refit.out_dir.exists() else "not run"
        estimate = history.get((model.backbone, tuple(train.input_size)))
        # every person trains: K/(K-1) times a fold job's images per epoch
        share = spec.folds.n_splits / (spec.folds.n_splits - 1)
        plans.append(JobPlan(refit.job_id, model.name, model.backbone, train, REFIT_FOLD, refit.job_hash,
                             refit.out_dir, "to run" if damaged else "cached", relative_cost(model, train) * share,
                             estimate * train.epochs * share if estimate else None,
                             "" if damaged in (None, "not run") else damaged, refit_epochs=refit.epochs))
    return sorted(plans, key=lambda p: (-p.cost, p.model))


def seconds_by_backbone(jobs_dir: Path) -> dict[tuple[str, tuple[int, ...]], float]:
    """Mean seconds per epoch of finished jobs, by backbone and input size."""
    per: dict[tuple[str, tuple[int, ...]], list[float]] = {}
    for path in jobs_dir.glob("*/result.json"):
        if unfinished_reason(path.parent):
            continue
        result = JobResult.read(path.parent)
        meta = json.loads((path.parent / "job.json").read_text()) if (path.parent / "job.json").exists() else {}
        size = tuple(meta.get("input_size", ()))
        per.setdefault((result.backbone, size), []).append(result.seconds / max(result.epochs_run, 1))
    return {k: sum(v) / len(v) for k, v in per.items()}


def format_plan(plans: list[JobPlan], resources: str) -> str:
    # As wide as the job ids and resources are, so that the demo's plan fits 80 columns.
    job, res = max([3, *(len(p.job_id) for p in plans)]), max(9, len(resources))
    lines = [f"{'job':{job}s}  {'state':8s} {'resources':{res}s}  {'estimate':>8s}"]
    for p in plans:
        estimate = f"{p.estimate_s / 60:.1f} min" if p.estimate_s else "unknown"
        lines.append(f"{p.job_id:{job}s}  {p.state:8s} {resources:{res}s}  {'-' if p.cached else estimate:>8s}"
                     + (f"  (again: {p.note})" if p.note else ""))
    todo = [p for p in plans if not p.cached]
    known = [p.estimate_s for p in todo if p.estimate_s]
    total = f", about {sum(known) / 3600:.2f} GPU-hours by earlier runs" if known else ""
    lines.append(f"{len(plans)} jobs: {len(plans) - len(todo)} cached, {len(todo)} to run{total}")
    return "\n".join(lines)
