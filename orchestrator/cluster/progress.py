"""What the driver shows while jobs run.

Every job's state is on one board; the collector (collect.py) records outcomes on it and the
display here only shows it: on a terminal a live view (progress_view.py) from the launch's
first second, in a log one timestamped line per event, no escape codes.

ETAs: a running job's rest is its measured epoch times plus the measured tail after its last
epoch; a queued job's, whole jobs as measured. Queued jobs go to the slot that frees first, in
queue order, so a last job that runs alone counts in full. Before a job has started nothing
says how long the slots take to start: the ETA says it is not known.
"""
from __future__ import annotations

import logging
import statistics
import sys
import time
from dataclasses import dataclass, field, replace

from orchestrator.cluster.plan import JobPlan

# Every state a job can be shown in: queued, running, done, failed; stopped (a search trial ended
# early by its scheduler); cached (finished in an earlier run: shown, not run); after Ctrl-C,
# interrupted (it had started) or not started.
STATES = ("done", "running", "queued", "failed", "stopped", "cached", "interrupted", "not started")
F1_NOTE = ("val F1: while running, the best epoch's so far (no TTA); when done, the job's OOF macro F1 "
           "(best epoch's weights, with the model's TTA)")


@dataclass(frozen=True)
class JobStatus:
    state: str = "queued"  # one of STATES
    node: str = ""
    epoch: int = 0
    epochs: int = 0
    val_f1: float | None = None  # see F1_NOTE
    started: float | None = None
    first_report: tuple[int, float] | None = None  # (epoch, time) of the first epoch report seen
    last_report: float | None = None
    finished: float | None = None
    error: str = ""

    def epoch_seconds(self) -> float | None:
        """Wall seconds per epoch between reports: start-up and the first epoch left out."""
        if self.first_report is None or self.last_report is None or self.epoch <= self.first_report[0]:
            return None
        return (self.last_report - self.first_report[1]) / (self.epoch - self.first_report[0])

    def shown_state(self) -> str:
        """The state as shown: a running job that has not finished an epoch yet is starting."""
        return "starting" if self.state == "running" and self.first_report is None else self.state


@dataclass
class Board:
    """Status of every job by id, the run's clock and its slots."""

    plans: dict[str, JobPlan]
    status: dict[str, JobStatus] = field(default_factory=dict)
    slots: int = 1
    started: float = field(default_factory=time.time)  # the command's start: elapsed counts preparation too
    phase: str = ""  # what the run is doing besides training (starting Ray, stopping); "" while jobs run
    starting: int = 0  # slots asked to start that have not all taken a job yet

    def get(self, job_id: str) -> JobStatus:
        return self.status.get(job_id, JobStatus())

    def update(self, job_id: str, **changes) -> JobStatus:
        """Record `changes` to a job's status; the new status. The one writer of the board."""
        self.status[job_id] = replace(self.get(job_id), **changes)
        return self.status[job_id]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for job_id in list(self.plans):
            counts[self.get(job_id).state] += 1
        return counts

    def tail_seconds(self) -> float | None:
        """After a job's last epoch report, until it is done (test inference, upload): measured."""
        tails = [s.finished - s.last_report for s in list(self.status.values())
                 if s.state == "done" and s.finished is not None and s.last_report is not None]
        return statistics.median(tails) if tails else None

    def job_seconds(self, model: str) -> float | None:
        """A whole job of `model`, start to end: measured on its finished jobs, else estimated
        from a running one's epochs, else from another model's in proportion to the plans'
        relative cost, else from earlier runs (the plan's estimate)."""
        measured = self._measured()
        if model in measured:
            return measured[model]
        cost = {p.model: p.cost for p in self.plans.values()}
        rates = [seconds / cost[m] for m, seconds in measured.items() if cost.get(m)]
        if rates:
            return statistics.median(rates) * cost[model]
        estimates = [p.estimate_s for p in self.plans.values() if p.model == model and p.estimate_s]
        return estimates[0] if estimates else None

    def _measured(self) -> dict[str, float]:
        """Seconds of a whole job per model, from finished jobs or running ones' epochs."""
        out: dict[str, list[float]] = {}
        tail = self.tail_seconds()
        for job_id, s in list(self.status.items()):
            model, per = self.plans[job_id].model, s.epoch_seconds()
            if s.state == "done" and s.started is not None and s.finished is not None:
                out.setdefault(model, []).append(s.finished - s.started)
            elif s.state == "running" and per is not None and s.started is not None:
                # Until a job has finished, one epoch stands in for the tail (measured: about one).
                out.setdefault(model, []).append(s.first_report[1] - s.started
                                                 + per * (s.epochs - s.first_report[0]) + (tail or per))
        return {m: statistics.median(v) for m, v in out.items()}

    def remaining(self, job_id: str, now: float) -> float | None:
        """Seconds until a running job is done, counting down between its reports."""
        s, per = self.get(job_id), self.get(job_id).epoch_seconds()
        if per is not None:
            tail = self.tail_seconds()
            return max(per * (s.epochs - s.epoch) + (per if tail is None else tail) - (now - s.last_report), 0.0)
        whole = self.job_seconds(self.plans[job_id].model)
        return None if whole is None or s.started is None else max(whole - (now - s.started), 0.0)

    def forecast(self, now: float | None = None) -> dict[str, float | None]:
        """Seconds from now until each running or queued job is done (None: not known yet)."""
        now = time.time() if now is None else now
        ids = list(self.plans)
        running = [j for j in ids if self.get(j).state == "running"]
        out = {j: self.remaining(j, now) for j in running}
        free = list(out.values()) + [self._slot_ready()] * max(self.slots - len(running), 0)
        for job_id in (j for j in ids if self.get(j).state == "queued"):
            whole = self.job_seconds(self.plans[job_id].model)
            if whole is None or not free or any(f is None for f in free):
                out[job_id] = None
                continue
            slot = min(range(len(free)), key=free.__getitem__)  # the queue's next job goes to the first free slot
            free[slot] += whole
            out[job_id] = free[slot]
        return out

    def _slot_ready(self) -> float | None:
        """Seconds until an idle slot can take a job: 0 once any job has started (slots start side
        by side), unknown before (how long Ray, a process, torch and the data index take)."""
        return 0.0 if any(s.started is not None for s in list(self.status.values())) else None

    def eta(self) -> float | None:
        """Seconds until every job is done, None until something says how long jobs take."""
        left = list(self.forecast().values())
        return None if any(v is None for v in left) else max(left, default=0.0)

    def summary(self) -> str:
        """One line, short enough for 80 columns: counts, elapsed, ETA."""
        c, eta = self.counts(), self.eta()
        left = ("stopped by Ctrl-C" if c["interrupted"] + c["not started"] else
                "done" if not c["running"] + c["queued"] else
                f"ETA {eta / 60:.1f} min" if eta is not None else "ETA not known yet")
        stopped = f", {c['stopped']} stopped early" if c["stopped"] else ""
        ctrl_c = (f", {c['interrupted']} interrupted, {c['not started']} not started"
                  if c["interrupted"] + c["not started"] else f", {c['running']} running, {c['queued']} queued")
        return (f"{c['done']} done{stopped}{ctrl_c}, {c['failed']} failed | "
                f"elapsed {(time.time() - self.started) / 60:.1f} min | {left}")

    def notes(self) -> str:
        """What the summary does not say, a line each (< 80 columns): phase, unknown ETA, cached jobs."""
        c, parts = self.counts(), [self.phase] if self.phase else []
        if self.starting:
            parts.append(f"starting {self.starting} slot{'s' if self.starting > 1 else ''} ({c['running']} with a "
                         "job): each loads torch and indexes the data once")
        elif c["running"] + c["queued"] and self.eta() is None and not self.phase:
            parts.append("ETA once a job has timed two epochs" if c["running"] else "ETA once a slot has started")
        if c["cached"]:
            parts.append(f"{c['cached']} of {len(self.plans)} jobs cached (finished in an earlier run)")
        return "\n".join(parts)


class ProgressTable:
    """Running jobs' epochs on the board; the board shown live on a terminal, as event lines
    in a log. Fed by the driver's loop (`handle`, a slot's events) or by Tune (TuneProgress)."""

    def __init__(self, board: Board, live: bool | None = None, stream=None):
        self.board = board
        self._stream = stream  # None: sys.stderr, looked up when used (a pickled display has none)
        self.live_view = self.stream.isatty() if live is None else live
        self._live = None  # created on first use: Tune pickles its callbacks, a live display can't be
        self._rerouted: list[tuple[logging.Handler, object]] = []  # (Ray's log handler, its own stream)

    @property
    def stream(self):
        return self._stream or sys.stderr

    def __getstate__(self):
        return {**self.__dict__, "_live": None, "_stream": None, "_rerouted": []}

    def handle(self, event: dict) -> None:
        """A slot's event, after the collector recorded it (orchestrator.cluster.collect)."""
        job_id, kind = event["job_id"], event["kind"]
        if kind == "started":
            self.started(job_id)
        elif kind == "epoch":
            self.epoch(job_id, event)
        elif kind in ("final", "failed"):
            self.ended(job_id)
        elif kind == "error" and event.get("retry"):
            self.event(f"retrying {job_id}: {_last_line(event.get('error'))}", keep=True)
        elif kind == "requeued":
            self.event(f"requeued {job_id}: {event.get('why')}", keep=True)

    def phase(self, text: str, slots: int = 0) -> None:
        """What the run does now ("" when only jobs run); `slots`: starting, until each has a job."""
        self.board.phase, self.board.starting = text, slots
        if text or slots:
            self.event(text or self.board.notes())
        elif self._live is not None:
            self._show()

    def started(self, job_id: str) -> None:
        s = self.board.update(job_id, state="running", started=self.board.get(job_id).started or time.time())
        counts = self.board.counts()
        if self.board.starting and (counts["running"] >= self.board.starting or not counts["queued"]):
            self.board.starting = 0  # every slot has its first job: nothing is starting any more
        label = self.board.plans[job_id].label
        self.event(f"started {job_id}" + (f" ({label})" if label else "") + (f" on {s.node}" if s.node else ""))

    def epoch(self, job_id: str, result: dict) -> None:
        now, s = time.time(), self.board.get(job_id)
        epoch, refit = int(result.get("epoch", 0)), self.board.plans[job_id].refit_epochs is not None
        s = self.board.update(job_id, node=result.get("node", ""), epoch=epoch, epochs=int(result.get("epochs", 0)),
                              val_f1=None if refit else result.get("best_f1"),
                              first_report=s.first_report or (epoch, now), last_report=now)
        left = self.board.remaining(job_id, now) if s.epoch_seconds() is not None else None
        scores = (f"refit, no one held out (train loss {result.get('train_loss', 0):.4f})" if refit else
                  f"val F1 {result.get('val_macro_f1', 0):.4f} (best {s.val_f1:.4f})")
        self.event(f"epoch {epoch}/{s.epochs} {job_id}: {scores}" + (f", {left / 60:.1f} min left" if left else ""))

    def ended(self, job_id: str) -> None:
        """The collector has recorded the outcome by now."""
        s = self.board.get(job_id)
        if s.state == "done" and self.board.plans[job_id].refit_epochs is not None:
            self.event(f"done {job_id}: refit on every person, {s.epochs} epochs")
        elif s.state == "done" and s.val_f1 is not None:
            self.event(f"done {job_id}: OOF macro F1 {s.val_f1:.4f}")
        else:
            self.event(f"FAILED {job_id}: {_cut(s.error) or 'see its log'}", keep=True)

    def event(self, line: str, keep: bool = False) -> None:
        """Show one event. A log gets one timestamped line with the summary; a terminal a
        repaint, and above the live view the lines worth keeping (`keep`: failures, retries)."""
        if not self.live_view:
            print(f"{time.strftime('%H:%M:%S')} {line} [{self.board.summary()}]", file=self.stream, flush=True)
            return
        self._show()
        if keep:
            self._live.console.print(f"{time.strftime('%H:%M:%S')} {line}", markup=False, highlight=False)

    def _show(self) -> None:
        from rich.console import Console
        from rich.live import Live

        from orchestrator.cluster.progress_view import BoardView

        if self._live is None:
            # Repainted every second, so elapsed and ETA count down between events. Stray
            # prints to stdout/stderr go above the view rather than through it.
            self._live = Live(BoardView(self.board), console=Console(file=self.stream), refresh_per_second=1)
            self._live.start()
        self._route_ray_logs()
        self._live.refresh()

    def _route_ray_logs(self) -> None:
        """While the view is up, Ray's log lines go above it (shown, not hidden): its handler holds
        the real stderr, and a line there cuts through the view. ray.init makes new handlers."""
        for handler in logging.getLogger("ray").handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is self._live.console.file \
                    and sys.stderr is not handler.stream:
                self._rerouted.append((handler, handler.setStream(sys.stderr)))

    def show_final(self) -> None:
        """Leave the final table on the terminal, or its summary in the log."""
        self.board.phase, self.board.starting = "", 0
        if self._live is not None:
            self.close()
        elif not self.live_view:
            print(f"{time.strftime('%H:%M:%S')} jobs ended [{self.board.summary()}]", file=self.stream, flush=True)

    def close(self) -> None:
        """End the live view as it stands, whatever ended the run: a view left running would
        leave the terminal's cursor hidden. Ray's log handler gets its stream back."""
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None
        for handler, stream in reversed(self._rerouted):
            handler.setStream(stream)
        self._rerouted.clear()


def _last_line(text: str | None) -> str:
    lines = [line for line in str(text or "").strip().splitlines() if line.strip()]
    return _cut(lines[-1]) if lines else "see its log"


def _cut(text: str, limit: int = 200) -> str:
    """At most `limit` characters, marked where cut (the whole message is in the job's log)."""
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"
