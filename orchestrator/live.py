"""What the driver shows and keeps while jobs run: one live table, per-job logs, and the copy
of each finished job's outputs into results/ the moment it finishes (so a killed driver
loses nothing that had finished)."""
from __future__ import annotations

import json
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from ray.tune import Callback

from orchestrator.placement import release_orphaned_groups
from orchestrator.plan import JobPlan
from orchestrator.ray_jobs import copy_outputs
from tasks.atomic import write_text


@dataclass(frozen=True)
class JobStatus:
    state: str = "queued"  # queued, running, done, failed, cached
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


class LiveTable(Callback):
    """Tune callback on the driver: tracks each trial's job, logs it, collects its outputs."""

    def __init__(self, board: Board, storage: str, log_dir: Path):
        # No stream kept: Tune pickles its callbacks; stderr is looked up when drawing.
        self.board, self.storage, self.log_dir = board, storage, log_dir
        self.redraw = sys.stderr.isatty()
        self.last_render = self.last_sweep = 0.0
        log_dir.mkdir(parents=True, exist_ok=True)

    def _update(self, trial, **changes) -> str:
        job_id = trial.config["job"]["job_id"]
        old = self.board.status.get(job_id, JobStatus())
        self.board.status[job_id] = replace(old, **changes)
        return job_id

    def _log(self, job_id: str, line: str) -> None:
        with open(self.log_dir / f"{job_id}.log", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def on_trial_start(self, iteration, trials, trial, **info):
        job_id = self._update(trial, state="running", started=time.time())
        self._log(job_id, "started")
        self._show(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("error"):
            job_id = self._update(trial, node=result.get("node", ""))
            self._log(job_id, f"error in the worker on {result.get('node')}:\n{result['error']}")
        elif result.get("final"):
            try:
                job_id = self._finish(trial, result)
            except Exception as err:  # one job's outputs lost in transit must not stop the others
                job_id = self._update(trial, state="failed", finished=time.time(), error=str(err))
                self._log(job_id, f"FAILED collecting its outputs: {type(err).__name__}: {err}")
        else:
            job_id = self._update(trial, node=result.get("node", ""), epoch=int(result.get("epoch", 0)),
                                  epochs=int(result.get("epochs", 0)), val_f1=result.get("best_f1"),
                                  epoch_seconds=result.get("epoch_seconds", 0.0))
            self._log(job_id, f"epoch {result.get('epoch')}/{result.get('epochs')} on {result.get('node')}: "
                              f"val F1 {result.get('val_macro_f1', 0):.4f} loss {result.get('train_loss', 0):.4f}")
        self._show(force=False)

    def _finish(self, trial, result) -> str:
        plan = self.board.plans[trial.config["job"]["job_id"]]
        copy_outputs(result["checkpoint_path"], self.storage, plan.out_dir)
        # Where the outputs also live in Train storage: re-inference on a node that cannot see
        # results/ fetches the weights from there.
        meta = {**trial.config["job"]["meta"], "node": result.get("node"),
                "checkpoint": result["checkpoint_path"], "storage": self.storage}
        write_text(plan.out_dir / "job.json", json.dumps(meta))
        job_id = self._update(trial, state="done", finished=time.time(), val_f1=result.get("val_macro_f1"),
                              node=result.get("node", ""))
        self._log(job_id, f"done: macro F1 {result.get('val_macro_f1'):.4f}; outputs in {plan.out_dir}")
        return job_id

    def on_trial_error(self, iteration, trials, trial, **info):
        error = _error_text(trial)
        job_id = self._update(trial, state="failed", finished=time.time(), error=error)
        self._log(job_id, f"FAILED:\n{error}")
        self._sweep()
        self._show(force=True)

    def on_step_end(self, iteration, trials, **info):
        # A controller killed with its trial may be marked dead only later: sweep now and then.
        if time.time() - self.last_sweep > 10:
            self._sweep()

    def _sweep(self) -> None:
        self.last_sweep = time.time()
        released = release_orphaned_groups()
        if released:
            print(f"released {released} placement group(s) left by ended jobs", file=sys.stderr)

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


def _error_text(trial) -> str:
    path = Path(trial.local_path or "") / "error.txt"
    if path.exists():
        return path.read_text()
    error = getattr(trial, "error", None) or getattr(trial, "_error", None)
    return "".join(traceback.format_exception(error)) if isinstance(error, BaseException) else str(error or "")
