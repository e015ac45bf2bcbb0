"""Collection: each finished job's outputs copied from its final Train checkpoint into
results/<name>/jobs/<job>/ the moment it ends (so a killed driver loses nothing that had
finished), its events in results/<name>/logs/<job>.log, and its outcome on the board.

A Tune callback on the driver.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ray.tune import Callback

from orchestrator.cluster.progress import Board
from orchestrator.cluster.storage import copy_outputs
from tasks.atomic import write_text


class Collector(Callback):
    """Copies outputs, writes job logs and job.json, and records each job's outcome on `board`."""

    def __init__(self, board: Board, storage: str, log_dir: Path):
        self.board, self.storage, self.log_dir = board, storage, log_dir
        log_dir.mkdir(parents=True, exist_ok=True)

    def _job(self, trial) -> str:
        return trial.config["job"]["job_id"]

    def log(self, job_id: str, line: str) -> None:
        with open(self.log_dir / f"{job_id}.log", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def on_trial_start(self, iteration, trials, trial, **info):
        self.log(self._job(trial), "started")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        job_id = self._job(trial)
        if result.get("error"):
            self.log(job_id, f"error in the worker on {result.get('node')}:\n{result['error']}")
        elif result.get("final"):
            try:
                self._collect(trial, result)
            except Exception as err:  # one job's outputs lost in transit must not stop the others
                self.board.update(job_id, state="failed", finished=time.time(), error=str(err))
                self.log(job_id, f"FAILED collecting its outputs: {type(err).__name__}: {err}")
        else:
            # The pid says which process on that node trains it (rank 0), e.g. to inspect or stop it.
            self.log(job_id, f"epoch {result.get('epoch')}/{result.get('epochs')} on {result.get('node')} "
                             f"(pid {result.get('worker_pid')}): "
                             f"val F1 {result.get('val_macro_f1', 0):.4f} loss {result.get('train_loss', 0):.4f}")

    def _collect(self, trial, result) -> None:
        job_id = self._job(trial)
        plan = self.board.plans[job_id]
        copy_outputs(result["checkpoint_path"], self.storage, plan.out_dir)
        # Where the outputs also live in Train storage: re-inference on a node that cannot see
        # results/ fetches the weights from there.
        meta = {**trial.config["job"]["meta"], "node": result.get("node"),
                "checkpoint": result["checkpoint_path"], "storage": self.storage}
        write_text(plan.out_dir / "job.json", json.dumps(meta))
        self.board.update(job_id, state="done", finished=time.time(), val_f1=result.get("val_macro_f1"),
                     node=result.get("node", ""))
        self.log(job_id, f"done: macro F1 {result.get('val_macro_f1'):.4f}; outputs in {plan.out_dir}")

    def on_trial_error(self, iteration, trials, trial, **info):
        job_id = self._job(trial)
        error = trial.get_error()
        self.board.update(job_id, state="failed", finished=time.time(), error=str(error or ""))
        self.log(job_id, f"FAILED:\n{error}")
