"""A slot's worker process: job after job from the driver's queue, in one process.

The process imports torch, timm and `tasks` once and indexes the data once; each job then
costs its own work. Each job trains in a fresh node-local folder restored from its own last
epoch in Train storage (orchestrator.cluster.slots.store), so a job resumes from that epoch
whichever slot or node takes it after a failure. Its outputs go to storage when it ends,
and the driver copies them into results/ (orchestrator.cluster.collect).

With several workers per job (DDP) every rank takes the same job; rank 0 alone talks to
the queue about it, writes the job's files and uploads them.
"""
from __future__ import annotations

import gc
import os
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path

from orchestrator.cluster.slots.queue import HEARTBEAT_S
from orchestrator.cluster.slots.store import JobStore
from tasks.job_io import EpochReport, Job, JobResult
from tasks.pseudo.fold_sets import read_pseudo
from tasks.spec.experiment import Experiment, stable_hash

OUTPUT_FILES = ("result.json", "oof.parquet", "test.parquet", "best.pt", "metrics.csv", "job.log", "tb", "wandb")
# What an epoch's checkpoint carries besides the weights: the log, the curves so far and their
# TensorBoard events all run on across restarts; so do W&B's run files (offline runs reach
# results/ from any node), when tracking.wandb is on.
EPOCH_FILES = ("checkpoint.pt", "job.log", "metrics.csv", "tb", "wandb")


class JobStopped(Exception):
    """The queue took the job back (cancelled by a search's scheduler, or given to another slot)."""


def slot_worker(config: dict) -> None:
    """Train's train_loop_per_worker for a data-parallel slot: every rank serves the slot."""
    import ray.train

    context = ray.train.get_context()
    serve_slot(config, context.get_world_rank(), context.get_world_size())


class SlotProcess:
    """A one-worker slot as a plain Ray actor: one process, started once, serving the slot."""

    def __init__(self) -> None:
        import tasks.job  # noqa: F401  torch, timm and albumentations, while the driver's queue starts

    def serve(self, config: dict) -> None:
        serve_slot(config, rank=0, world=1)


def serve_slot(config: dict, rank: int, world: int) -> None:
    """Take, train, repeat; return when the queue says done or the process should be replaced
    (config["max_jobs"] jobs run, or past config["max_rss_gb"])."""
    queue, slot = config["queue"], config["slot"]
    heart = Heartbeat(queue, slot) if rank == 0 else None
    group = _agree(uuid.uuid4().hex, world)  # this start of the slot's workers, the same on every rank
    after, jobs_run = None, 0
    try:
        while True:
            got = _ask(queue, slot, after, group)
            if got is None:
                return
            after = got["job"]["job_id"]
            if heart is not None:
                heart.job = after
            run_job(got["job"], queue, slot, rank, world, got["attempt"])
            jobs_run += 1
            if heart is not None:
                heart.job = None
            if _agree(should_retire(jobs_run, config), world):
                return  # the driver starts a fresh process for this slot
    finally:
        if heart is not None:
            heart.stop()


def _ask(queue, slot: str, after: str | None, group: str) -> dict | None:
    import ray

    while True:
        got = ray.get(queue.take.remote(slot, after, group))
        if got.get("done"):
            return None
        if "job" in got:
            return got
        time.sleep(0.25)


def run_job(config: dict, queue, slot: str, rank: int, world: int, attempt: int) -> None:
    """One job, from its last saved epoch; its end (final, failed, cancelled) goes to the queue."""
    import ray

    spec = Experiment.model_validate(config["spec"])
    job_id, node = config["job_id"], ray.util.get_node_ip_address()
    store = JobStore(config["storage"], spec.name, job_id)
    work = _scratch(scratch_name(config), rank)
    send = (lambda kind, **payload: queue.event.remote(job_id, kind, payload)) if rank == 0 else (lambda *a, **k: None)
    if rank == 0 and _report_finished(store, work, send, node):
        return
    resumed = store.restore(work)
    log_file = open(work / "job.log", "a", buffering=1)

    def log(line: str) -> None:
        log_file.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    send("started", node=node, pid=os.getpid(), attempt=attempt, slot=slot, resumed=resumed)
    log(f"start on {node}" + (f" as rank {rank}" if rank else "") + (" (resumed from a checkpoint)" if resumed else ""))
    pseudo = read_pseudo(config["pseudo"]) if config.get("pseudo") else None  # the driver's file, as bytes
    job = Job(config["model"], config["fold"], work, job_id=job_id, pseudo=pseudo, repeat=config.get("repeat", 0),
              epochs=config.get("epochs"))
    on_epoch = _epoch_hook(store, work, queue, slot, job_id, rank, world, node, send)
    try:
        result = _train(spec, job, on_epoch, log)
    except JobStopped:
        log("stopped: the queue took this job back")
        send("cancelled")
        return
    except Exception:
        log(f"FAILED:\n{traceback.format_exc()}")
        send("failed", node=node, error=traceback.format_exc())
        if world > 1:
            # The other ranks wait in a collective that this one never reaches: raising lets
            # Train tear the group down and restart it, and the queue counts the attempt.
            raise
        return
    finally:
        log_file.close()
    if rank == 0:
        log_line(work, f"done: refit on every person, {result.epochs_run} epochs" if job.epochs is not None else
                 f"done: best macro F1 {result.val['macro_f1']:.4f} at epoch {result.best_epoch}")
        path = store.save(work, OUTPUT_FILES, result.epochs_run, final=True)
        send("final", node=node, checkpoint_path=path, val_macro_f1=result.val["macro_f1"],
             epochs=result.epochs_run, seconds=result.seconds)
    shutil.rmtree(work, ignore_errors=True)


def _train(spec: Experiment, job: Job, on_epoch, log) -> JobResult:
    from tasks.job import train_job

    try:
        return train_job(spec, job, on_epoch=on_epoch, dataset=cached_dataset(spec), log=log)
    finally:
        release_memory()


def _epoch_hook(store: JobStore, work: Path, queue, slot: str, job_id: str, rank: int, world: int, node: str, send):
    import ray

    def on_epoch(report: EpochReport) -> None:
        mine = True
        if rank == 0:
            mine = ray.get(queue.beat.remote(slot, job_id))
        if not _agree(not mine, world):
            if rank == 0:
                store.save(work, EPOCH_FILES, report.epoch)
                send("epoch", **epoch_metrics(report, node))
            return
        raise JobStopped(job_id)

    return on_epoch


def _report_finished(store: JobStore, work: Path, send, node: str) -> bool:
    """A job that finished before the driver collected it (the driver was killed): report it."""
    path = store.final_path()
    if path is None:
        return False
    from orchestrator.cluster.storage import open_checkpoint

    open_checkpoint(path, store.storage).to_directory(str(work))
    result = JobResult.read(work)
    send("final", node=node, checkpoint_path=path, val_macro_f1=result.val["macro_f1"], epochs=result.epochs_run,
         seconds=result.seconds)
    shutil.rmtree(work, ignore_errors=True)
    return True


def epoch_metrics(report: EpochReport, node: str) -> dict:
    return {"node": node, "worker_pid": os.getpid(), "epoch": report.epoch, "epochs": report.epochs,
            "val_macro_f1": report.val.macro_f1, "best_f1": report.best_f1, "train_loss": report.train_loss,
            "epoch_seconds": report.seconds}


def log_line(work: Path, line: str) -> None:
    with open(work / "job.log", "a") as f:
        f.write(f"{time.strftime('%H:%M:%S')} {line}\n")


def scratch_name(config: dict) -> str:
    """The job's node-local folder name: its id plus its Train storage. The same job of two
    experiments (another results folder, another user on the node) never shares a folder."""
    return f"{config['job_id']}-{stable_hash([config['storage'], config['job_id']])[:8]}"


def _scratch(name: str, rank: int) -> Path:
    """A fresh node-local folder: what an earlier attempt left on this node is not trusted."""
    work = Path(tempfile.gettempdir()) / "maskfold-jobs" / (name if rank == 0 else f"{name}.rank{rank}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


_DATASET: dict[str, object] = {}


def cached_dataset(spec: Experiment):
    """The data index, loaded once per process for as long as the jobs share their data."""
    from tasks.data.preparation import load_dataset

    key = stable_hash([spec.data.model_dump(mode="json"), str(spec.out_dir), spec.folds.model_dump(mode="json")])
    if key not in _DATASET:
        _DATASET.clear()
        _DATASET[key] = load_dataset(spec, verbose=False)
    return _DATASET[key]


def release_memory() -> None:
    """Between jobs: the last job's model, optimiser and loaders go, and CUDA's cached blocks."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def rss_gb() -> float:
    """This process's resident memory now (not its peak)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1024**3
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def should_retire(jobs_run: int, config: dict) -> bool:
    max_jobs, max_rss = config.get("max_jobs", 0), config.get("max_rss_gb", 0)
    return bool((max_jobs and jobs_run >= max_jobs) or (max_rss and rss_gb() > max_rss))


def _agree(value, world: int):
    """Rank 0's value on every rank (they must leave a job or the slot together)."""
    if world == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class Heartbeat:
    """Tells the queue every HEARTBEAT_S that this slot is alive, from a background thread."""

    def __init__(self, queue, slot: str):
        self.queue, self.slot, self.job = queue, slot, None
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.queue.beat.remote(self.slot, self.job)

    def stop(self) -> None:
        self._stop.set()
