"""Collection: each finished job's outputs copied from its folder in Train storage into
results/<name>/jobs/<job>/ the moment it ends (so a killed driver loses nothing that had
finished), its events in results/<name>/logs/<job>.log, and its outcome on the board.

Fed by the driver's loop with the events the slots send (orchestrator.cluster.slots.queue).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from orchestrator.cluster.progress import Board
from orchestrator.cluster.storage import copy_outputs
from tasks.atomic import write_text


class Collector:
    """Copies outputs, writes job logs and job.json, and records each job's outcome on `board`."""

    def __init__(self, board: Board, storage: str, log_dir: Path, metas: dict[str, dict]):
        self.board, self.storage, self.log_dir, self.metas = board, storage, log_dir, metas
        log_dir.mkdir(parents=True, exist_ok=True)

    def log(self, job_id: str, line: str) -> None:
        with open(self.log_dir / f"{job_id}.log", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def handle(self, event: dict) -> None:
        """One event from a slot: started, retry, epoch, error, requeued, final, failed, cancelled."""
        job_id, kind = event["job_id"], event["kind"]
        if kind == "started":
            self.board.update(job_id, state="running", started=self.board.get(job_id).started or time.time(),
                              node=event.get("node", ""))
            self.log(job_id, "started" if event.get("attempt", 1) == 1 and not event.get("resumed") else
                     f"resumed (attempt {event.get('attempt')}) on {event.get('node')}, after epoch {event.get('resumed')}")
        elif kind == "epoch":
            # The pid says which process on that node trains it (rank 0), e.g. to inspect or stop it.
            self.log(job_id, f"epoch {event.get('epoch')}/{event.get('epochs')} on {event.get('node')} "
                             f"(pid {event.get('worker_pid')}): "
                             f"val F1 {event.get('val_macro_f1', 0):.4f} loss {event.get('train_loss', 0):.4f}")
        elif kind in ("error", "failed"):
            self.log(job_id, f"error in the worker on {event.get('node')}"
                             + (" (it will be tried again)" if event.get("retry") else "") + f":\n{event.get('error')}")
            if kind == "failed":
                self.board.update(job_id, state="failed", finished=time.time(), error=_last_line(event.get("error")))
                self.log(job_id, "FAILED")
        elif kind in ("retry", "requeued"):
            self.log(job_id, f"its worker was lost; {event.get('why') or 'attempt ' + str(event.get('attempt'))}")
        elif kind == "final":
            self._final(job_id, event)

    def _final(self, job_id: str, event: dict) -> None:
        try:
            self._collect(job_id, event)
        except Exception as err:  # one job's outputs lost in transit must not stop the others
            self.board.update(job_id, state="failed", finished=time.time(), error=str(err))
            self.log(job_id, f"FAILED collecting its outputs: {type(err).__name__}: {err}")

    def _collect(self, job_id: str, event: dict) -> None:
        plan = self.board.plans[job_id]
        copy_outputs(event["checkpoint_path"], self.storage, plan.out_dir)
        # Where the outputs also live in Train storage: re-inference on a node that cannot see
        # results/ fetches the weights from there.
        meta = {**self.metas[job_id], "node": event.get("node"), "checkpoint": event["checkpoint_path"],
                "storage": self.storage}
        write_text(plan.out_dir / "job.json", json.dumps(meta))
        refit = plan.refit_epochs is not None  # trained on every person: no held-out score
        self.board.update(job_id, state="done", finished=time.time(), val_f1=None if refit else event.get("val_macro_f1"),
                          node=event.get("node", ""))
        scores = "refit on every person" if refit else f"macro F1 {event.get('val_macro_f1'):.4f}"
        self.log(job_id, f"done: {scores}; outputs in {plan.out_dir}")


def _last_line(text: str | None) -> str:
    lines = [line for line in str(text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "see its log"
