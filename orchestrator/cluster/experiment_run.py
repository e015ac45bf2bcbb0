"""One experiment end to end on Ray: prepare, plan, run what is not finished, gather.

Every planned job ends the run in exactly one state (done, cached, failed, interrupted, not
started), and the summary says which; the gathered tables land in results/<name>/.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import pandas as pd

from orchestrator.analysis.tracking_logs import log_leaderboard
from orchestrator.cluster.gather import Gathered, gather
from orchestrator.cluster.plan import JobPlan, Launched, format_plan, plan_jobs, plan_refits
from orchestrator.cluster.slots.config import worker_resources
from tasks.data.folds import make_folds
from tasks.data.preparation import Dataset, load_dataset, prepare, read_folds, rows_hash
from tasks.job_io import JobResult, unfinished_reason
from tasks.lock import experiment_lock
from tasks.log import to_stream
from tasks.spec.experiment import Experiment
from tasks.spec.refit import REFIT_FOLD


@dataclass(frozen=True)
class RunSummary:
    """Every planned job in exactly one state, and what was gathered."""

    done: tuple[str, ...]  # ran to the end in this run and collected
    cached: tuple[str, ...]  # finished in an earlier run
    failed: tuple[str, ...]
    interrupted: tuple[str, ...]  # started, stopped by Ctrl-C: resumes from its last epoch
    not_started: tuple[str, ...]  # queued when the run stopped
    gathered: Gathered
    wall_seconds: float

    @property
    def unfinished(self) -> tuple[str, ...]:
        return self.interrupted + self.not_started


def run_experiment(spec: Experiment, address: str | None = None, storage: str | None = None,
                   dry_run: bool = False, stream=None, force: bool = False) -> RunSummary:
    """Plan, run what is not finished, gather. A dry run plans and writes nothing."""
    stream = stream or sys.stderr
    spec = spec.resolved()
    if dry_run:
        dataset = load_dataset(spec, write_cache=False)  # a dry run writes nothing, not even cache entries
        plans = plan_jobs(spec, rows_hash(spec, dataset), pseudo_sets(spec, dataset, stream, write=False))
        print(format_plan(plans, per_job_resources(spec)), file=stream)
        return RunSummary((), tuple(p.job_id for p in plans if p.cached), (), (), (), Gathered(0, 0, (), ()), 0.0)
    if spec.pseudo is not None:  # a missing round 1 stops before anything is written
        from orchestrator.analysis.pseudo_labels.labelling import check_source

        check_source(spec)
    with experiment_lock(spec.out_dir):
        return _run_locked(spec, address, storage, stream, force)


def _run_locked(spec: Experiment, address: str | None, storage: str | None, stream, force: bool) -> RunSummary:
    started, clock = time.monotonic(), time.time()
    say = to_stream(stream)
    say(f"preparing {spec.name}: indexing the data, the image cache, the folds ...")
    dataset = prepare(spec, force=force)
    hashed = rows_hash(spec, dataset)
    plans = plan_jobs(spec, hashed, pseudo_sets(spec, dataset, stream))
    say(format_plan(plans, per_job_resources(spec)))
    launched = _launch(spec, plans, address, storage, stream, clock)
    refits = plan_refits(spec, hashed, plans) if not launched.interrupted else []
    if refits:  # after the folds: their best epochs say how long each refit model trains
        say(refit_plan_line(spec, refits, plans))
        after = _launch(spec, refits, address, storage, stream, clock)
        launched = Launched({**launched.states, **after.states}, after.interrupted)
    plans = plans + refits
    say(f"gathering the OOF and test logits of {len(plans)} jobs ...")
    gathered = gather(spec.out_dir, plans, dataset.train["image_key"], dataset.eval["image_key"])
    log_leaderboard(spec, spec.out_dir)
    summary = RunSummary(launched.jobs("done"), tuple(p.job_id for p in plans if p.cached), launched.jobs("failed"),
                         launched.jobs("interrupted"), launched.jobs("not started"), gathered,
                         time.monotonic() - started)
    say(format_summary(spec, plans, summary))
    return summary


def _launch(spec: Experiment, plans: list[JobPlan], address: str | None, storage: str | None, stream,
            clock: float) -> Launched:
    """Run the plans not finished before; say so when all are."""
    todo, cached = [p for p in plans if not p.cached], [p for p in plans if p.cached]
    if not todo:
        to_stream(stream)(f"all {len(plans)} jobs cached (finished in an earlier run): nothing to train")
        return Launched({}, False)
    from orchestrator.cluster.launch import launch
    from orchestrator.cluster.storage import check_storage

    storage = storage or os.environ.get("MASKFOLD_STORAGE") or str(spec.out_dir / "ray")
    check_storage(storage)
    return launch(spec, todo, storage, address, stream, cached, clock)


def refit_plan_line(spec: Experiment, refits: list[JobPlan], folds: list[JobPlan]) -> str:
    """What each refit model trains for, and from what."""
    how = "the median best epoch of its fold models" if spec.refit.epochs == "best" else "refit.epochs"
    parts = []
    for plan in refits:
        best = sorted(JobResult.read(p.out_dir).best_epoch for p in folds if p.model == plan.model)
        parts.append(f"{plan.model} {plan.refit_epochs} epochs (fold best epochs {', '.join(map(str, best))})")
    state = ", ".join(f"{sum(p.cached == c for p in refits)} {w}" for c, w in ((True, "cached"), (False, "to run")))
    return (f"refit on all {spec.folds.n_splits}/{spec.folds.n_splits} of the people ({how}; {state}): "
            + "; ".join(parts))


def pseudo_sets(spec: Experiment, dataset: Dataset, stream, write: bool = True) -> dict[int, str] | None:
    """Build each fold's pseudo labels (spec.pseudo) and return their hashes; None without.
    Without `write` (a dry run) nothing is written and the folds are computed, not read."""
    if spec.pseudo is None:
        return None
    from orchestrator.analysis.pseudo_labels.labelling import build_pseudo

    if write:
        folds = read_folds(spec, dataset)
    else:
        folds = make_folds(dataset.train, spec.folds.n_splits, spec.folds.seed, dataset.linked)
    build = build_pseudo(spec, folds, dataset.eval["image_key"].to_numpy(), write,
                         log=lambda line: print(line, file=stream, flush=True))
    return build.hashes


def per_job_resources(spec: Experiment) -> str:
    bundle = worker_resources(spec.resources) | ({"GPU": 1} if spec.resources.slot == "GPU" else {})
    workers = spec.resources.workers_per_job
    return (f"{workers}x " if workers > 1 else "") + " ".join(f"{k}={v:g}" for k, v in bundle.items())


def format_summary(spec: Experiment, plans: list[JobPlan], summary: RunSummary) -> str:
    finished = [JobResult.read(p.out_dir) for p in plans if not unfinished_reason(p.out_dir)]
    done = [r for r in finished if r.fold != REFIT_FOLD]  # refit models hold no one out: no val F1
    wall = summary.wall_seconds
    lines = [f"\n{spec.name} in {f'{wall:.0f} s' if wall < 60 else f'{wall / 60:.1f} min'}: {len(summary.done)} done, "
             f"{len(summary.cached)} cached, {len(summary.failed)} failed, {len(summary.interrupted)} interrupted, "
             f"{len(summary.not_started)} not started"]
    if done:
        # a specialist's (train.target) macro F1 is of its attribute alone: its row says so
        table = pd.DataFrame([{"model": r.model if r.target == "all" else f"{r.model} ({r.target} F1)",
                               "f1": r.val["macro_f1"], "hours": r.seconds * r.workers / 3600} for r in done])
        per = table.groupby("model").agg(folds=("f1", "size"), macro_f1=("f1", "mean"), sd_over_folds=("f1", "std"),
                                         slot_hours=("hours", "sum"))
        unit = "GPU-hours" if spec.resources.slot == "GPU" else f"{spec.resources.slot}-hours"
        names = {"macro_f1": "val macro F1 (mean)", "sd_over_folds": "sd over folds", "slot_hours": unit}
        lines.append(per.rename(columns=names).to_string(float_format=lambda v: f"{v:.4f}"))
        if spec.oof_optimistic:
            lines.append("OOF optimistic: these models learned pseudo labels from the full round-1 blend "
                         "(pseudo.per_fold: false), whose models saw every fold's people; their validation "
                         "scores above, and any blend fitted on them, are flattered")
    refits = [r for r in finished if r.fold == REFIT_FOLD]
    if refits:
        lines.append("refit on every person (no held-out rows, so no val F1): " + ", ".join(
            f"{r.model} {r.epochs_run} epochs {r.seconds * r.workers / 3600:.4f} h" for r in refits)
            + f" -> {spec.out_dir}/test_refit.parquet; the blend combines them ({spec.refit.combine})")
    g = summary.gathered
    if g.models:
        files = "oof.parquet, test.parquet" + (f" (repeat 0; oof_r<r>, test_r<r> for repeats 1-{spec.folds.repeats - 1})"
                                               if spec.folds.repeats > 1 else "")
        targets = sorted({p.train.target for p in plans} - {"all"})
        files += (", " + ", ".join(f"oof_{t}.parquet, test_{t}.parquet" for t in targets) + " (specialists)"
                  if targets else "")
        lines.append(f"gathered {g.oof_rows} OOF rows and {g.test_rows} test rows of {len(g.models)} models "
                     f"-> {spec.out_dir}/{files}, leaderboard.csv")
    if g.incomplete:
        lines.append(f"left out of the tables (a fold did not finish): {', '.join(g.incomplete)}")
    for job_id in summary.failed:
        lines.append(f"FAILED {job_id}: see {spec.out_dir / 'logs' / (job_id + '.log')}; a re-run retries it")
    if summary.unfinished:
        lines.append(f"interrupted: {len(summary.unfinished)} jobs not finished, run again to resume")
    return "\n".join(lines)
