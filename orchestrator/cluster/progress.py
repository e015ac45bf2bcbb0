"""What the driver shows while jobs run: every job's state on one board, drawn as a table.

The board is the run's record of each job (queued, running, done, failed); the collector
(collect.py) records outcomes on it, and the table here only shows it.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace

from ray.tune import Callback

from orchestrator.cluster.plan import JobPlan


@dataclass(frozen=True)
class JobStatus:
    state: str = "queued"  # queued, running, done, failed
    node: str = ""
    epoch: int = 0
    epochs: int = 0
    val_f1: float | None = None
    started: float | None = None
    finished: float | None = None
    epoch_seconds: float = 0.0
    error: str = ""

    def eta(self, now: float) -> str:
        if self.state != "running" or not self.epoch or self.started is None:
            return ""
        per_epoch = (now - self.started) / self.epoch
        return f"{per_epoch * (self.epochs - self.epoch) / 60:.1f} min"


@dataclass
class Board:
    """Status of every job by id; rendered as a table."""

    plans: dict[str, JobPlan]
    status: dict[str, JobStatus] = field(default_factory=dict)

    def render(self) -> str:
        now = time.time()
        lines = [f"{'job':44s} {'node':15s} {'state':8s} {'epoch':>7s} {'val F1':>7s} {'ETA':>9s}"]
        for job_id in self.plans:
            s = self.status.get(job_id, JobStatus())
            f1 = f"{s.val_f1:.4f}" if s.val_f1 is not None else ""
            epoch = f"{s.epoch}/{s.epochs}" if s.epochs else ""
            lines.append(f"{job_id:44s} {s.node:15s} {s.state:8s} {epoch:>7s} {f1:>7s} {s.eta(now):>9s}")
        return "\n".join(lines)


class ProgressTable(Callback):
    """Tune callback on the driver: running jobs' epochs on the board, and the board drawn."""

    def __init__(self, board: Board):
        # No stream kept: Tune pickles its callbacks; stderr is looked up when drawing.
        self.board = board
        self.redraw = sys.stderr.isatty()
        self.last_render = 0.0

    def _update(self, trial, **changes) -> None:
        job_id = trial.config["job"]["job_id"]
        self.board.status[job_id] = replace(self.board.status.get(job_id, JobStatus()), **changes)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._update(trial, state="running", started=time.time())
        self._show(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not result.get("final") and not result.get("error"):
            self._update(trial, node=result.get("node", ""), epoch=int(result.get("epoch", 0)),
                         epochs=int(result.get("epochs", 0)), val_f1=result.get("best_f1"),
                         epoch_seconds=result.get("epoch_seconds", 0.0))
        self._show(force=bool(result.get("final")))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._show(force=True)

    def show_final(self) -> None:
        self.redraw = False  # leave the last table in the scrollback
        self._show(force=True)

    def _show(self, force: bool) -> None:
        now = time.time()
        if not force and now - self.last_render < (1 if self.redraw else 30):
            return
        self.last_render = now
        text = self.board.render()
        if self.redraw:  # repaint in place on a terminal; plain appended snapshots in logs
            sys.stderr.write("\x1b[H\x1b[2J" + text + "\n")
        else:
            sys.stderr.write(text + "\n\n")
        sys.stderr.flush()
