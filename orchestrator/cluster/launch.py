"""The Tune fan-out: one trial per job, longest first, as many at once as there are slots;
Ctrl-C stops the jobs and keeps what finished."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.stopper import Stopper

from orchestrator.cluster.collect import Collector
from orchestrator.cluster.placement import PlacementSweeper
from orchestrator.cluster.plan import JobPlan, Launched
from orchestrator.cluster.progress import Board, JobStatus, ProgressTable
from orchestrator.cluster.session import check_resources, ray_session
from orchestrator.cluster.worker import job_config, run_trial
from tasks.spec import Experiment


def launch(spec: Experiment, todo: list[JobPlan], storage: str, address: str | None, stream) -> Launched:
    """Run the jobs through Tune, longest first; Ctrl-C stops them and keeps what finished."""
    from ray import tune

    quiet_tune()
    board = Board({p.job_id: p for p in todo})
    collector, table = Collector(board, storage, spec.out_dir / "logs"), ProgressTable(board)
    configs = [job_config(spec, p.job_id, p.model, p.fold, storage) | {"meta": _meta(p)} for p in todo]
    with ray_session(spec, address), stop_on_interrupt(stream) as interrupt:
        slots = board.slots = check_resources(spec.resources)
        print(f"running {len(todo)} jobs, {slots} at a time (Ctrl-C stops them; finished jobs are kept)",
              file=stream)
        tuner = tune.Tuner(
            # The trainable only waits on its TorchTrainer, whose controller runs on the same
            # node: keep both on the head node (no CPU taken) so that losing a worker node
            # loses only Train workers, which FailureConfig restarts from their checkpoint.
            tune.with_resources(run_trial, {"node:__internal_head__": 0.001}),
            param_space={"job": tune.grid_search(configs)},
            tune_config=tune_config(slots),
            run_config=tune.RunConfig(name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=storage,
                                      callbacks=[collector, table, PlacementSweeper(), CSVLoggerCallback(),
                                                 JsonLoggerCallback()],
                                      stop=InterruptStopper(), verbose=0),
        )
        grid = tuner.fit()
    table.show_final()
    failed = {r.config["job"]["job_id"] for r in grid if r.error is not None}
    stopped = interrupt.is_set()
    states = {p.job_id: final_state(board.status.get(p.job_id), p.job_id in failed, stopped) for p in todo}
    return Launched(states, stopped)


def quiet_tune() -> None:
    """Tune's console output and TensorBoard events off: the progress display and each job's
    own events (jobs/<job>/tb/, named by model and fold) say it better. Its CSV and JSON
    loggers stay (callbacks in launch): the ResultGrid reads trial outcomes from them."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the legacy reporter is silent at verbose=0
    logging.getLogger("ray.tune").setLevel(logging.WARNING)


def final_state(status: JobStatus | None, errored: bool, stopped: bool) -> str:
    """done (collected), failed (its trial errored, its outputs could not be collected, or it
    ended unfinished on its own), interrupted (started, then Ctrl-C) or not started."""
    if errored or (status is not None and status.state == "failed"):
        return "failed"
    if status is None or status.state == "queued":
        return "not started" if stopped else "failed"
    if status.state == "done":
        return "done"
    return "interrupted" if stopped else "failed"


_INTERRUPT = threading.Event()


class InterruptStopper(Stopper):
    """A Tune stopper that ends every trial once Ctrl-C was pressed (queued ones never start).

    Tune's own SIGINT handler stops the run too but returns as if it had finished, so the
    driver could not tell an interrupted run from a complete one; this one is ours to ask.
    """

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return _INTERRUPT.is_set()


@contextlib.contextmanager
def stop_on_interrupt(stream):
    """First Ctrl-C: stop the jobs, keep what finished. Second: stop at once (KeyboardInterrupt)."""
    _INTERRUPT.clear()
    if threading.current_thread() is not threading.main_thread():
        yield _INTERRUPT  # signals reach only the main thread; nothing to install
        return

    def on_sigint(signum, frame):
        if _INTERRUPT.is_set():
            raise KeyboardInterrupt
        _INTERRUPT.set()
        print("\ninterrupt: stopping the running jobs (Ctrl-C again to stop at once) ...", file=stream, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # else Tune swaps this handler for its own
    try:
        yield _INTERRUPT
    finally:
        signal.signal(signal.SIGINT, previous)


def tune_config(slots: int):
    from ray import tune

    # One trial actor per slot runs job after job: a new Python process per job costs ~3 s.
    return tune.TuneConfig(max_concurrent_trials=slots, reuse_actors=True)


def _meta(plan: JobPlan) -> dict:
    """What job.json records of the job beside where its outputs came from."""
    return {"job_id": plan.job_id, "job_hash": plan.job_hash, "model": plan.model, "backbone": plan.backbone,
            "fold": plan.fold, "input_size": list(plan.train.input_size), "epochs": plan.train.epochs}
