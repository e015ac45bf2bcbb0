"""The K-fold fan-out: every job to the slots' queue, longest first, as many at once as there
are slots (orchestrator.cluster.slots.pool); Ctrl-C stops the jobs and keeps what finished."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time

from orchestrator.cluster.collect import Collector
from orchestrator.cluster.plan import JobPlan, Launched
from orchestrator.cluster.progress import Board, JobStatus, ProgressTable
from orchestrator.cluster.session import check_resources, ray_session
from orchestrator.cluster.slots.config import job_config
from orchestrator.cluster.slots.pool import SlotPool
from tasks.job_io import JobResult
from tasks.spec.experiment import Experiment

POLL_S = 0.25


def launch(spec: Experiment, todo: list[JobPlan], storage: str, address: str | None, stream,
           cached: list[JobPlan] = (), started: float | None = None) -> Launched:
    """Run the jobs on the slots, longest first; Ctrl-C stops them and keeps what finished.
    `cached` jobs are shown beside them; `started`: when the command started (the elapsed time)."""
    board = new_board(todo, cached, started)
    metas = {p.job_id: _meta(p) for p in todo}
    table = ProgressTable(board, stream=stream)
    collector = Collector(board, storage, spec.out_dir / "logs", metas)
    local = not (address or os.environ.get("RAY_ADDRESS"))
    table.phase("starting Ray: an embedded one on this machine (127.0.0.1 only)" if local
                else f"joining the Ray cluster at {address or os.environ['RAY_ADDRESS']}")
    try:
        with ray_session(spec, address), stop_on_interrupt(table.phase) as interrupt:
            states = _run_on_slots(spec, todo, storage, local, board, table, collector, interrupt)
        stopped = interrupt.is_set()
        failed = {job for job, state in states.items() if state == "failed"}
        launched = Launched({p.job_id: final_state(board.status.get(p.job_id), p.job_id in failed, stopped)
                             for p in todo}, stopped)
        for job_id, state in launched.states.items():  # the last view says how Ctrl-C left each job
            if state in ("interrupted", "not started"):
                board.update(job_id, state=state)
        table.show_final()
    finally:
        table.close()  # also when Ray, the resources or a second Ctrl-C ended it
    return launched


def _run_on_slots(spec: Experiment, todo: list[JobPlan], storage: str, local: bool, board: Board,
                  table: ProgressTable, collector: Collector, interrupt: threading.Event) -> dict[str, str]:
    """Start the slots, queue every job, follow them to the end; each job's last state."""
    configs = [job_config(spec, p.job_id, p.model, p.fold, storage, repeat=p.repeat, epochs=p.refit_epochs)
               for p in todo]
    slots = board.slots = check_resources(spec.resources)
    starting = min(slots, len(todo))
    table.event(f"running {len(todo)} jobs, {slots} at a time (Ctrl-C stops them; finished jobs are kept)", keep=True)
    table.phase("", slots=starting)
    pool = SlotPool(spec.resources, storage, starting, len(todo), local,
                    log=lambda line: table.event(line, keep=True)).start()
    try:
        pool.submit(configs, last=True)
        return _follow(pool, collector, table, interrupt)
    finally:
        pool.shutdown(grace_s=0 if interrupt.is_set() else 5)


def new_board(todo: list[JobPlan], cached: list[JobPlan], started: float | None) -> Board:
    """The board of a run: the jobs to run queued, longest first as the queue hands them out,
    then the cached ones with what their results say."""
    board = Board({p.job_id: p for p in [*todo, *cached]}, started=started or time.time())
    for p in todo:
        board.status[p.job_id] = JobStatus(epochs=p.train.epochs)
    for p in cached:
        try:
            result = JobResult.read(p.out_dir)
            board.status[p.job_id] = JobStatus("cached", epoch=result.epochs_run, epochs=p.train.epochs,
                                               val_f1=result.val["macro_f1"])
        except (OSError, ValueError, KeyError):  # planned as cached a moment ago: shown without scores
            board.status[p.job_id] = JobStatus("cached", epochs=p.train.epochs)
    return board


def _follow(pool: SlotPool, collector: Collector, table: ProgressTable, interrupt: threading.Event) -> dict[str, str]:
    """Events to the collector and the display until every job ended (or Ctrl-C); their states."""
    while True:
        polled = pool.poll()
        states = polled.states
        for event in polled.events:
            collector.handle(event)
            table.handle(event)
        if interrupt.is_set() or all(s in ("done", "failed", "cancelled") for s in states.values()):
            return states
        if not pool.alive():
            for job, state in states.items():  # no slot can run them: say so rather than wait
                if state == "queued":
                    collector.handle({"job_id": job, "kind": "failed",
                                      "error": f"no slot could start its worker process: {pool.last_error}"})
            return {job: "failed" if s == "queued" else s for job, s in states.items()}
        time.sleep(POLL_S)


def quiet_tune() -> None:
    """Tune's console output and TensorBoard events off (a search's trials): the progress
    display and each job's own events (jobs/<job>/tb/) say it better. Its CSV and JSON
    loggers stay (callbacks in search.py): the ResultGrid reads trial outcomes from them."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the legacy reporter is silent at verbose=0
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    # Tune's timing hints ("The `process_trial_result` operation took 1.890 s, which may be a
    # performance bottleneck"): on 2 cores with jobs training every step is slow, and the hint
    # is about Tune's own loop, nothing a user of maskfold can act on. Its errors still show.
    logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)


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


@contextlib.contextmanager
def stop_on_interrupt(say):
    """First Ctrl-C: stop the jobs, keep what finished. Second: stop at once (KeyboardInterrupt).
    `say` takes the one line that tells the user so."""
    _INTERRUPT.clear()
    if threading.current_thread() is not threading.main_thread():
        yield _INTERRUPT  # signals reach only the main thread; nothing to install
        return

    def on_sigint(signum, frame):
        if _INTERRUPT.is_set():
            raise KeyboardInterrupt
        _INTERRUPT.set()
        say("interrupt: stopping the running jobs (Ctrl-C again to stop at once) ...")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield _INTERRUPT
    finally:
        signal.signal(signal.SIGINT, previous)


def _meta(plan: JobPlan) -> dict:
    """What job.json records of the job beside where its outputs came from."""
    return {"job_id": plan.job_id, "job_hash": plan.job_hash, "model": plan.model, "backbone": plan.backbone,
            "fold": plan.fold, "input_size": list(plan.train.input_size), "epochs": plan.train.epochs,
            **({"repeat": plan.repeat} if plan.repeat else {})}
