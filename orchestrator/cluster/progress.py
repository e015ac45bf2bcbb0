"""What the driver shows while jobs run.

Every job's state is on one board (queued, running, done, failed); the collector
(collect.py) records outcomes on it and the display here only shows it: on a terminal a live
table repainted in place under a summary line (done / running / queued / failed, elapsed,
overall ETA); in a log, one timestamped line per event (started, epoch, done, failed).

ETAs come from measured epoch times, the wall time between a job's epoch reports, never from
start-up (imports, loading, the first epoch's warm-up), which would make early ETAs 10-25x long.
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field, replace

from orchestrator.cluster.plan import JobPlan

F1_NOTE = ("val F1: while running, the best epoch's so far (no TTA); when done, the job's OOF macro F1 "
           "(best epoch's weights, flip TTA if set)")


@dataclass(frozen=True)
class JobStatus:
    state: str = "queued"  # queued, running, done, failed, stopped (a search trial ended early by its scheduler)
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

    def remaining(self) -> float | None:
        per = self.epoch_seconds()
        return None if per is None else per * (self.epochs - self.epoch)


@dataclass
class Board:
    """Status of every job by id, the run's clock and its slots."""

    plans: dict[str, JobPlan]
    status: dict[str, JobStatus] = field(default_factory=dict)
    slots: int = 1
    started: float = field(default_factory=time.time)

    def get(self, job_id: str) -> JobStatus:
        return self.status.get(job_id, JobStatus())

    def update(self, job_id: str, **changes) -> JobStatus:
        """Record `changes` to a job's status; the new status. The one writer of the board."""
        self.status[job_id] = replace(self.get(job_id), **changes)
        return self.status[job_id]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("done", "running", "queued", "failed", "stopped"), 0)
        for job_id in self.plans:
            counts[self.get(job_id).state] += 1
        return counts

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
        for job_id, s in self.status.items():
            model = self.plans[job_id].model
            if s.state == "done" and s.started is not None and s.finished is not None:
                out.setdefault(model, []).append(s.finished - s.started)
            elif s.epoch_seconds() is not None and s.started is not None:
                out.setdefault(model, []).append(
                    s.first_report[1] - s.started + s.epoch_seconds() * (s.epochs - s.first_report[0]))
        return {m: statistics.median(v) for m, v in out.items()}

    def eta(self) -> float | None:
        """Seconds until every job is done, None until some epochs say how long jobs take."""
        now, work = time.time(), []
        for job_id, plan in self.plans.items():
            s = self.get(job_id)
            if s.state == "running" and s.remaining() is not None:
                work.append(s.remaining())
            elif s.state in ("running", "queued"):
                whole = self.job_seconds(plan.model)
                started = s.started if s.state == "running" and s.started else now
                work.append(None if whole is None else max(whole - (now - started), 0.0))
        if any(w is None for w in work):
            return None
        return sum(work) / max(self.slots, 1)

    def summary(self) -> str:
        c, eta = self.counts(), self.eta()
        left = "done" if not c["running"] + c["queued"] else (f"ETA {eta / 60:.1f} min" if eta is not None
                                                               else "ETA after the first epochs")
        stopped = f", {c['stopped']} stopped early" if c["stopped"] else ""
        return (f"{c['done']} done{stopped}, {c['running']} running, {c['queued']} queued, {c['failed']} failed | "
                f"elapsed {(time.time() - self.started) / 60:.1f} min | {left}")

    def table(self):
        from rich.table import Table

        table = Table(title=self.summary(), title_justify="left", caption=F1_NOTE, caption_justify="left")
        for name, justify in (("job", "left"), ("node", "left"), ("state", "left"), ("epoch", "right"),
                              ("val F1", "right"), ("s/epoch", "right"), ("ETA", "right")):
            table.add_column(name, justify=justify)
        for job_id in self.plans:
            s = self.get(job_id)
            per, left = s.epoch_seconds(), s.remaining() if s.state == "running" else None
            label = self.plans[job_id].label
            table.add_row(f"{job_id} {label}" if label else job_id, s.node, s.state, f"{s.epoch}/{s.epochs}" if s.epochs else "",
                          f"{s.val_f1:.4f}" if s.val_f1 is not None else "", f"{per:.1f}" if per else "",
                          f"{left / 60:.1f} min" if left is not None else "")
        return table


class ProgressTable:
    """Running jobs' epochs on the board; the board shown live on a terminal, as event lines
    in a log. Fed by the driver's loop (`handle`, a slot's events) or by Tune (TuneProgress)."""

    def __init__(self, board: Board, live: bool | None = None):
        self.board = board
        self.live_view = sys.stderr.isatty() if live is None else live
        self._live = None  # created on first use: Tune pickles its callbacks, a live display can't be

    def __getstate__(self):
        return {**self.__dict__, "_live": None}

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
            self.event(f"retrying {job_id}: {_last_line(event.get('error'))}")
        elif kind == "requeued":
            self.event(f"requeued {job_id}: {event.get('why')}")

    def started(self, job_id: str) -> None:
        s = self.board.update(job_id, state="running", started=self.board.get(job_id).started or time.time())
        label = self.board.plans[job_id].label
        self.event(f"started {job_id}" + (f" ({label})" if label else "") + (f" on {s.node}" if s.node else ""))

    def epoch(self, job_id: str, result: dict) -> None:
        now, s = time.time(), self.board.get(job_id)
        epoch = int(result.get("epoch", 0))
        s = self.board.update(job_id, node=result.get("node", ""), epoch=epoch, epochs=int(result.get("epochs", 0)),
                              val_f1=result.get("best_f1"), first_report=s.first_report or (epoch, now),
                              last_report=now)
        left = s.remaining()
        self.event(f"epoch {epoch}/{s.epochs} {job_id}: val F1 {result.get('val_macro_f1', 0):.4f} (best "
                   f"{s.val_f1:.4f})" + (f", {left / 60:.1f} min left" if left is not None else ""))

    def ended(self, job_id: str) -> None:
        """The collector has recorded the outcome by now."""
        s = self.board.get(job_id)
        self.event(f"done {job_id}: OOF macro F1 {s.val_f1:.4f}" if s.state == "done" and s.val_f1 is not None
                   else f"FAILED {job_id}: {s.error[:200] or 'see its log'}")

    def event(self, line: str) -> None:
        """Show one event: repaint the live table, or one timestamped line with the summary in a log."""
        if self.live_view:
            self._show()
        else:
            print(f"{time.strftime('%H:%M:%S')} {line} [{self.board.summary()}]", file=sys.stderr, flush=True)

    def _show(self) -> None:
        from rich.console import Console
        from rich.live import Live

        if self._live is None:
            self._live = Live(self.board.table(), console=Console(stderr=True), refresh_per_second=1,
                              get_renderable=self.board.table)
            self._live.start()
        self._live.refresh()

    def show_final(self) -> None:
        """Leave the final table on the terminal, or its summary in the log."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        elif not self.live_view:
            print(f"{time.strftime('%H:%M:%S')} jobs ended [{self.board.summary()}]", file=sys.stderr, flush=True)


def _last_line(text: str | None) -> str:
    lines = [line for line in str(text or "").strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "see its log"
