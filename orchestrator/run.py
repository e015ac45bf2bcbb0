"""`python -m orchestrator.run SPEC`: every (fold, model) job of an experiment on Ray.

With no cluster address it starts an embedded local Ray sized to this machine; with
`--address auto` (or RAY_ADDRESS) it joins a running cluster. Finished jobs are never
repeated, a crashed run resumes, and the gathered tables land in results/<name>/.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import pandas as pd

from orchestrator.cli import add_spec_args, run_main, spec_from_args
from orchestrator.gather import Gathered, gather
from orchestrator.plan import JobPlan, Launched, format_plan, plan_jobs
from orchestrator.ray_jobs import worker_resources
from tasks.job_io import JobResult, unfinished_reason
from tasks.lock import experiment_lock
from tasks.prepare import load_dataset, prepare, rows_hash
from tasks.spec import Experiment


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


def absolute(spec: Experiment) -> Experiment:
    """Paths as the driver sees them, so workers in other folders (or nodes) find them."""
    data = spec.data.model_copy(update={
        "root": spec.data.root.resolve(),
        "relabel": spec.data.relabel.resolve() if spec.data.relabel else None,
        "cache_dir": spec.data.cache_dir.resolve() if spec.data.cache_dir else None})
    models = [m.model_copy(update={"pretrained_path": m.pretrained_path.resolve() if m.pretrained_path else None})
              for m in spec.models]
    return spec.model_copy(update={"data": data, "models": models, "results_dir": spec.results_dir.resolve()})


def run_experiment(spec: Experiment, address: str | None = None, storage: str | None = None,
                   dry_run: bool = False, stream=None, force: bool = False) -> RunSummary:
    """Plan, run what is not finished, gather. A dry run plans and writes nothing."""
    stream = stream or sys.stderr
    spec = absolute(spec)
    if dry_run:
        plans = plan_jobs(spec, rows_hash(spec, load_dataset(spec)))
        print(format_plan(plans, per_job_resources(spec)), file=stream)
        return RunSummary((), tuple(p.job_id for p in plans if p.cached), (), (), (), Gathered(0, 0, (), ()), 0.0)
    with experiment_lock(spec.out_dir):
        return _run_locked(spec, address, storage, stream, force)


def _run_locked(spec: Experiment, address: str | None, storage: str | None, stream, force: bool) -> RunSummary:
    started = time.monotonic()
    dataset = prepare(spec, force=force)
    plans = plan_jobs(spec, rows_hash(spec, dataset))
    print(format_plan(plans, per_job_resources(spec)), file=stream)
    todo = [p for p in plans if not p.cached]
    launched = Launched({}, False)
    if todo:
        from orchestrator.ray_jobs import check_storage
        from orchestrator.ray_run import launch

        storage = storage or os.environ.get("MASKFOLD_STORAGE") or str(spec.out_dir / "ray")
        check_storage(storage)
        launched = launch(spec, todo, storage, address, stream)
    gathered = gather(spec.out_dir, plans, dataset.train["image_key"], dataset.eval["image_key"])
    summary = RunSummary(launched.jobs("done"), tuple(p.job_id for p in plans if p.cached), launched.jobs("failed"),
                         launched.jobs("interrupted"), launched.jobs("not started"), gathered,
                         time.monotonic() - started)
    print(format_summary(spec, plans, summary), file=stream)
    return summary


def per_job_resources(spec: Experiment) -> str:
    bundle = worker_resources(spec.resources) | ({"GPU": 1} if spec.resources.slot == "GPU" else {})
    workers = spec.resources.workers_per_job
    return (f"{workers}x " if workers > 1 else "") + " ".join(f"{k}={v:g}" for k, v in bundle.items())


def format_summary(spec: Experiment, plans: list[JobPlan], summary: RunSummary) -> str:
    done = [JobResult.read(p.out_dir) for p in plans if not unfinished_reason(p.out_dir)]
    lines = [f"\n{spec.name}: {len(summary.done)} done, {len(summary.cached)} cached, {len(summary.failed)} failed, "
             f"{len(summary.interrupted)} interrupted, {len(summary.not_started)} not started; "
             f"wall time {summary.wall_seconds / 60:.1f} min"]
    if done:
        table = pd.DataFrame([{"model": r.model, "f1": r.val["macro_f1"], "hours": r.seconds * r.workers / 3600}
                              for r in done])
        per = table.groupby("model").agg(folds=("f1", "size"), macro_f1=("f1", "mean"), spread=("f1", "std"),
                                         slot_hours=("hours", "sum"))
        unit = "GPU-hours" if spec.resources.slot == "GPU" else f"{spec.resources.slot}-hours"
        lines.append(per.rename(columns={"slot_hours": unit}).to_string(float_format=lambda v: f"{v:.4f}"))
    g = summary.gathered
    if g.models:
        lines.append(f"gathered {g.oof_rows} OOF rows and {g.test_rows} test rows of {len(g.models)} models "
                     f"-> {spec.out_dir}/oof.parquet, test.parquet, leaderboard.csv")
    if g.incomplete:
        lines.append(f"left out of the tables (a fold did not finish): {', '.join(g.incomplete)}")
    for job_id in summary.failed:
        lines.append(f"FAILED {job_id}: see {spec.out_dir / 'logs' / (job_id + '.log')}; a re-run retries it")
    if summary.unfinished:
        lines.append(f"interrupted: {len(summary.unfinished)} jobs not finished, run again to resume")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_spec_args(parser)
    parser.add_argument("--address", help="Ray cluster to join ('auto' on a cluster's head node); "
                                          "default: RAY_ADDRESS, else an embedded local Ray")
    parser.add_argument("--storage", help="Train checkpoint storage shared by all nodes, e.g. s3://bucket/runs "
                                          "(default: MASKFOLD_STORAGE, else results/<name>/ray)")
    parser.add_argument("--dry-run", action="store_true", help="print the job matrix and stop; writes nothing")
    parser.add_argument("--force", action="store_true",
                        help="prepare again even where it replaces the folds of finished jobs made with other "
                             "data or folds (those results then no longer blend)")
    args = parser.parse_args(argv)

    def body() -> int:
        from orchestrator.ray_jobs import StorageError
        from orchestrator.ray_run import ResourceError

        try:
            summary = run_experiment(spec_from_args(args), args.address, args.storage, args.dry_run,
                                     force=args.force)
        except (ResourceError, StorageError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if summary.unfinished:
            return 130
        return 1 if summary.failed else 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
