"""A hyperparameter search on Ray Tune: trials sampled from the spec's `search:` section,
each trained as ordinary jobs (orchestrator.cluster.trial), weak ones stopped by ASHA.

Tune's experiment state lives in the search's storage under a name derived from the spec
and its search section: the same command run again after a crash or Ctrl-C restores it,
keeps every finished trial and its searcher's history, and resumes the unfinished ones
(their jobs from their last epoch's checkpoint).
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from orchestrator.cluster import tune_trust
from orchestrator.cluster.experiment_run import pseudo_sets
from orchestrator.cluster.launch import quiet_tune
from orchestrator.cluster.plan import JobPlan
from orchestrator.cluster.progress import Board, ProgressTable
from orchestrator.cluster.session import ResourceError, check_resources, ray_session
from orchestrator.cluster.slots.placement import PlacementSweeper, release_orphaned_groups
from orchestrator.cluster.slots.pool import SlotPool
from orchestrator.cluster.trial import SEARCH_QUEUE, search_trial
from tasks.data.preparation import prepare
from tasks.errors import UserError
from tasks.lock import experiment_lock
from tasks.spec.experiment import Experiment, stable_hash
from tasks.spec.search_space import Distribution


class SearchError(UserError):
    """A spec that cannot be searched as asked."""


@dataclass(frozen=True)
class SearchRun:
    """Every trial of the search so far, one row each, and how the run ended."""

    trials: pd.DataFrame  # trial, <searched paths>, val_macro_f1, oof_macro_f1, epochs, status, ...
    interrupted: bool  # Ctrl-C: unfinished trials resume on the next run
    tune_dir: str  # Tune's experiment state


def search_dir(spec: Experiment):
    return spec.out_dir / "search"


def jobs_per_trial(spec: Experiment) -> int:
    return len(spec.models) * len(spec.search.folds)


def max_epochs(spec: Experiment) -> int:
    """The most epochs a trial can run: ASHA's last rung."""
    epochs = [spec.train_for(m).epochs for m in spec.models]
    searched = [d.examples() for p, d in spec.search.space.items() if p.endswith("train.epochs")]
    return int(max(epochs + [int(v) for values in searched for v in values]))


def format_search_plan(spec: Experiment) -> str:
    s = spec.search
    lines = [f"search {spec.name}: {s.trials} trials by {s.searcher}, scheduler {s.scheduler}"
             + (f" (grace {s.grace_epochs} epochs, keeps 1 in {s.reduction_factor} at each rung)"
                if s.scheduler == "asha" else ""),
             f"each trial: {len(spec.models)} model(s) x folds {s.folds} = {jobs_per_trial(spec)} job(s) of up to "
             f"{max_epochs(spec)} epochs, one {spec.resources.slot} slot each; score = mean validation macro F1",
             "space:"]
    lines += [f"  {path}: {d.kind} {d.bounds if d.kind != 'choice' else d.choice}" for path, d in s.space.items()]
    return "\n".join(lines)


def run_search(spec: Experiment, address: str | None = None, storage: str | None = None, dry_run: bool = False,
               stream=None) -> SearchRun | None:
    """Prepare the data once, then run (or resume) the search; a dry run prints the plan."""
    stream = stream or sys.stderr
    spec = spec.resolved()
    if spec.search is None:
        raise SearchError(f"{spec.name}: the spec has no `search:` section; see experiments/search_demo.yaml")
    print(format_search_plan(spec), file=stream)
    if dry_run:
        return None
    with experiment_lock(spec.out_dir):
        # the trials' jobs read the pseudo sets from results/<name>/pseudo/ (trial_jobs)
        pseudo_sets(spec, prepare(spec), stream)
        from orchestrator.cluster.storage import check_storage

        storage = storage or os.environ.get("MASKFOLD_STORAGE") or str(search_dir(spec) / "ray")
        check_storage(storage)
        return _search(spec, storage, address, stream)


def _search(spec: Experiment, storage: str, address: str | None, stream) -> SearchRun:
    from ray import tune

    quiet_tune()
    name = f"search-{stable_hash([spec.spec_hash(), spec.search.model_dump(mode='json')])[:8]}"
    path = f"{storage.rstrip('/')}/{name}"
    board = Board({})
    table = ProgressTable(board)
    callbacks = [TrialOutcomes(board, table), TuneProgress(table), PlacementSweeper(), CSVLoggerCallback(),
                 JsonLoggerCallback()]
    # Ctrl-C is Tune's own here: it saves the running trials as unfinished, so the next run
    # resumes them; a stopper would end them as finished.
    tune_trust.check_trusted(path)  # Tuner.restore unpickles Tune's state: it must be the user's own
    with ray_session(spec, address), search_slots(spec, storage, address, table) as slots:
        board.slots = slots
        if tune.Tuner.can_restore(path):
            print(f"resuming the search in {path}: finished trials are kept", file=stream)
            tuner = tune.Tuner.restore(path, trainable=trainable(), resume_unfinished=True, resume_errored=False,
                                       restart_errored=False)
            # Restoring brings back the callbacks pickled by the first run; this run shows its own board.
            tuner._local_tuner.get_run_config().callbacks = callbacks
            replay_rungs(tuner._local_tuner._tune_config.scheduler, path)
        else:
            print(f"searching: {spec.search.trials} trials, {board.slots} at a time (Ctrl-C stops; run the same "
                  "command again to resume)", file=stream)
            tuner = tune.Tuner(trainable(), param_space=param_space(spec, storage),
                               tune_config=tune_config(spec, board.slots),
                               run_config=tune.RunConfig(name=name, storage_path=storage, callbacks=callbacks,
                                                         verbose=0))
        grid = tuner.fit()
        release_orphaned_groups()  # trials ended by Ctrl-C never reach the sweeper's next step
    table.show_final()
    trials = trial_table(grid, path)
    unfinished = trials["status"].isin(["interrupted", "not started"]).any() if len(trials) else True
    return SearchRun(trials, bool(unfinished) or len(trials) < spec.search.trials, path)


@contextlib.contextmanager
def search_slots(spec: Experiment, storage: str, address: str | None, table: ProgressTable):
    """The slots every trial's jobs are queued for, kept going while the search runs; yields how
    many trials run at once."""
    concurrent = concurrent_trials(spec, check_resources(spec.resources))
    local = not (address or os.environ.get("RAY_ADDRESS"))
    pool = SlotPool(spec.resources, storage, concurrent * jobs_per_trial(spec), spec.search.trials * jobs_per_trial(spec),
                    local, log=table.event).start(name=SEARCH_QUEUE)
    done = threading.Event()

    def keep() -> None:  # a slot's run that ended (or failed) is started again while jobs wait
        while not done.wait(1.0):
            try:
                pool.maintain()
            except Exception as err:  # never let the keeper die silently: the search would stall
                table.event(f"warning: keeping the slots: {type(err).__name__}: {err}")

    keeper = threading.Thread(target=keep, daemon=True)
    keeper.start()
    try:
        yield concurrent
    finally:
        done.set()
        keeper.join()
        pool.shutdown()


def replay_rungs(scheduler, tune_dir: str) -> None:
    """Give a restored ASHA the rung scores of the trials reported before the restart.

    Tune restores trials and the searcher but starts the scheduler empty (ray 2.60), so
    after a resume every rung would pass its first trials whatever they scored. The scores
    are in each trial's progress.csv; they are recorded at each rung as ASHA itself would.
    """
    from ray.tune.schedulers import ASHAScheduler

    if not isinstance(scheduler, ASHAScheduler):
        return
    for progress in sorted(Path(tune_dir).glob("trial_*/progress.csv")):
        try:
            rows = pd.read_csv(progress)
        except (pd.errors.EmptyDataError, OSError):
            continue
        trial = _Reported(progress.parent.name.removeprefix("trial_"))
        for bracket in scheduler._brackets:
            for row in rows.itertuples():
                bracket.on_result(trial, row.epoch, row.val_macro_f1)


@dataclass(frozen=True)
class _Reported:
    trial_id: str  # all of a Trial that ASHA's bracket reads


def trainable():
    from ray import tune

    # As a K-fold's trainable (launch.py): on the head node, taking no CPU; its jobs hold the slots.
    return tune.with_resources(search_trial, {"node:__internal_head__": 0.001})


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"  # Tune's default spells out the whole sampled config


def concurrent_trials(spec: Experiment, slots: int) -> int:
    per_trial = jobs_per_trial(spec) * spec.resources.workers_per_job
    if slots < per_trial:
        raise ResourceError(f"a trial trains {jobs_per_trial(spec)} job(s) side by side (models x search.folds), "
                            f"each on its own {spec.resources.slot} slot, but there are {slots}: "
                            "search fewer folds or models, or add slots")
    return slots // per_trial


class TrialOutcomes(Callback):
    """How each trial ended, on the board: done (every job finished), stopped early by the
    scheduler, or failed. Comes before the ProgressTable in the callbacks, which shows it."""

    def __init__(self, board: Board, table: ProgressTable):
        self.board, self.table = board, table

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("complete"):
            self.board.update(trial.trial_id, state="done", finished=time.time(), val_f1=result["oof_macro_f1"])

    def on_trial_complete(self, iteration, trials, trial, **info):
        _cancel_jobs(trial.trial_id)  # stopped by ASHA: its jobs leave their slots at the epoch's end
        status = self.board.get(trial.trial_id)
        if status.state == "running":
            self.board.update(trial.trial_id, state="stopped", finished=time.time())
            self.table.event(f"stopped early {trial.trial_id} after epoch {status.epoch}: "
                             f"best val F1 {status.val_f1 or 0:.4f}")

    def on_trial_error(self, iteration, trials, trial, **info):
        _cancel_jobs(trial.trial_id)
        self.board.update(trial.trial_id, state="failed", finished=time.time(), error=str(trial.get_error() or ""))


def _cancel_jobs(trial_id: str) -> None:
    import ray

    ray.get(ray.get_actor(SEARCH_QUEUE).cancel.remote(trial_id))


class TuneProgress(Callback):
    """The progress display fed by Tune: a row per trial, labelled by its sampled values."""

    def __init__(self, table: ProgressTable):
        self.table = table

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id not in self.table.board.plans:
            self.table.board.plans[trial.trial_id] = trial_plan(trial)
        self.table.started(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("final"):
            self.table.ended(trial.trial_id)
        else:
            self.table.epoch(trial.trial_id, result)

    def on_trial_error(self, iteration, trials, trial, **info):
        first = str(trial.get_error() or "").strip().splitlines()
        self.table.event(f"FAILED {trial.trial_id}: {first[-1][:200] if first else 'see its log'}")


def tune_domain(dist: Distribution, grid: bool):
    from ray import tune

    if grid:
        return tune.grid_search(list(dist.choice))
    lo, hi = dist.bounds if dist.kind != "choice" else (None, None)
    return {"uniform": lambda: tune.uniform(lo, hi), "loguniform": lambda: tune.loguniform(lo, hi),
            "randint": lambda: tune.randint(lo, hi + 1),  # Tune's upper end is excluded; ours is not
            "choice": lambda: tune.choice(list(dist.choice))}[dist.kind]()


def param_space(spec: Experiment, storage: str) -> dict:
    grid = spec.search.searcher == "grid"
    return {"params": {path: tune_domain(d, grid) for path, d in spec.search.space.items()},
            "base": spec.model_dump(mode="json", exclude={"search"}), "folds": list(spec.search.folds),
            "storage": storage, "max_epochs": max_epochs(spec)}


def tune_config(spec: Experiment, concurrent: int):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    s = spec.search
    if s.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(seed=spec.seed)  # TPE; Tune caps its concurrency (max_concurrent_trials)
    else:
        # Tune does not cap a variant generator: it takes its own cap.
        searcher = BasicVariantGenerator(random_state=spec.seed, max_concurrent=concurrent)
    scheduler = (ASHAScheduler(time_attr="epoch", max_t=max_epochs(spec), grace_period=s.grace_epochs,
                               reduction_factor=s.reduction_factor) if s.scheduler == "asha" else None)
    # A stopped trial's actor is ended, not reused: the Train runs it started end with it.
    return tune.TuneConfig(metric="val_macro_f1", mode="max", search_alg=searcher, scheduler=scheduler,
                           num_samples=s.trials if s.searcher != "grid" else (s.num_samples or 1),
                           max_concurrent_trials=concurrent if s.searcher == "optuna" else None, reuse_actors=False,
                           trial_dirname_creator=trial_dirname)


def trial_plan(trial) -> JobPlan:
    """A trial on the progress board, labelled by its sampled values."""
    from tasks.spec.experiment import TrainSpec

    values = " ".join(f"{_field(p)}={_short(v)}" for p, v in trial.config["params"].items())
    return JobPlan(trial.trial_id, "trial", "", TrainSpec(), 0, "", Path(), "to run", 1.0, None, label=values)


def _field(path: str) -> str:
    """The path's last name, with its index if it ends in one: lr, age_borders.1."""
    parts = path.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def trial_table(grid, tune_dir: str) -> pd.DataFrame:
    """One row per trial: its sampled values, scores, epochs and how it ended."""
    rows = []
    saved = saved_statuses(tune_dir)
    for trial in grid._experiment_analysis.trials:  # ray 2.60: a Result has no trial id or status
        metrics, status = trial.last_result or {}, trial_status(trial, saved.get(trial.trial_id, trial.status))
        rows.append({"trial": trial.trial_id, **trial.config.get("params", {}),
                     "val_macro_f1": metrics.get("val_macro_f1"), "oof_macro_f1": metrics.get("oof_macro_f1"),
                     "epochs": metrics.get("epoch", 0), "stopped_early": status == "stopped early",
                     "status": status, "error": _last_line(trial.get_error()) if status == "error" else "",
                     "seconds": metrics.get("time_total_s"), "finished_at": metrics.get("timestamp")})
    table = pd.DataFrame(rows)
    return table.sort_values("trial", kind="stable").reset_index(drop=True) if len(table) else table


def trial_status(trial, saved: str) -> str:
    """done, stopped early (by the scheduler), error, interrupted (resumes) or not started."""
    metrics = trial.last_result or {}
    if saved == "ERROR":
        return "error"
    if metrics.get("complete"):
        return "done"
    if saved == "TERMINATED":
        return "stopped early"
    return "interrupted" if metrics.get("epoch") else "not started"


def saved_statuses(tune_dir: str) -> dict[str, str]:
    """Each trial's status in Tune's last saved experiment state, which a resume reads.

    After Ctrl-C Tune saves the running trials as RUNNING (to resume), then ends them, so the
    trials in memory all say TERMINATED; only the saved state tells them from stopped ones.
    """
    import json

    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(tune_dir)
    states = sorted(f.path for f in filesystem.get_file_info(fs.FileSelector(root))
                    if os.path.basename(f.path).startswith("experiment_state-"))
    if not states:
        return {}
    with filesystem.open_input_stream(states[-1]) as stream:  # names carry the run's start time
        entries = json.loads(stream.read())["trial_data"]
    trials = [json.loads(entry[0]) for entry in entries]
    return {t["trial_id"]: t["status"] for t in trials}


def _last_line(error) -> str:
    if error is None:
        return ""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(error).__name__
