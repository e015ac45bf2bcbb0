"""The Ray side of a job: a Train V2 TorchTrainer run, launched from a Tune function trainable.

The trainable reserves almost nothing; the Train worker holds the slot (a GPU, or a custom
resource such as `fake_gpu` on CPU machines). Workers get the small spec and paths, never
data: they index the data and open the decode-once cache on their own node.

Every epoch the worker reports its metrics with the epoch checkpoint, so a worker lost with
its node resumes from its last epoch elsewhere (FailureConfig). Its last report carries a
checkpoint holding all of the job's outputs, which the driver copies into results/
(orchestrator.cluster.collect).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import traceback
from pathlib import Path

from tasks.job_io import EpochReport, Job
from tasks.pseudo import file_bytes, read_pseudo
from tasks.spec import Experiment, ResourcesSpec, stable_hash

# Attempts to start a job's worker group. Each waits up to RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S
# (ray_run.TRAIN_ENV) for its slot, which covers an autoscaler launching a GPU node.
START_RETRIES = 3
OUTPUT_FILES = ("result.json", "oof.parquet", "test.parquet", "best.pt", "metrics.csv", "job.log", "tb", "wandb")
# What an epoch's checkpoint carries besides the weights: the log, the curves so far and their
# TensorBoard events all run on across restarts; so do W&B's run files (offline runs reach
# results/ from any node), when tracking.wandb is on.
EPOCH_FILES = ("checkpoint.pt", "job.log", "metrics.csv", "tb", "wandb")


def worker_resources(res: ResourcesSpec) -> dict[str, float]:
    """One Train worker's bundle. With use_gpu=True Ray adds the GPU itself."""
    bundle = {"CPU": res.cpus_per_worker}
    if res.slot != "GPU":
        bundle[res.slot] = 1
    if res.accelerator_type:
        bundle[f"accelerator_type:{res.accelerator_type}"] = 0.001
    return bundle


def train_worker(config: dict) -> None:
    """The Train worker: run (or resume) the job in a node-local folder, report every epoch.

    With several workers per job every rank runs this; rank 0 writes the job's files and
    attaches the checkpoints, the others report bare metrics (Train waits for every rank).
    """
    import ray.train

    from tasks.job import train_job

    spec = Experiment.model_validate(config["spec"])
    rank = ray.train.get_context().get_world_rank()
    checkpoint = ray.train.get_checkpoint()
    work = _scratch(scratch_name(config), rank, checkpoint)
    node = ray.util.get_node_ip_address()
    if (work / "result.json").exists():  # finished before the driver could collect it
        _report_final(work, node, rank)
        return
    log_file = open(work / "job.log", "a", buffering=1)

    def log(line: str) -> None:
        log_file.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def on_epoch(report: EpochReport) -> None:
        if rank:
            ray.train.report(_epoch_metrics(report, node))
            return
        with tempfile.TemporaryDirectory() as tmp:
            copy_entries(work, Path(tmp), EPOCH_FILES)
            ray.train.report(_epoch_metrics(report, node), checkpoint=ray.train.Checkpoint.from_directory(tmp))

    pseudo = read_pseudo(config["pseudo"]) if config.get("pseudo") else None  # the driver's file, as bytes
    job = Job(config["model"], config["fold"], work, job_id=config["job_id"], pseudo=pseudo)  # work: scratch
    log(f"start on {node}" + (f" as rank {rank}" if rank else "") + (" (resumed from a checkpoint)" if checkpoint else ""))
    try:
        result = train_job(spec, job, on_epoch=on_epoch, log=log)
    except Exception:
        log(f"FAILED:\n{traceback.format_exc()}")
        if ray.train.get_context().get_world_size() == 1:
            # Ray shortens worker tracebacks; the driver logs this full one from the report.
            # Not with several ranks: report is a barrier that the other ranks, blocked in a
            # gradient all-reduce, never reach; raising lets Train tear the group down.
            ray.train.report({"final": 0, "node": node, "error": traceback.format_exc()})
        raise
    log(f"done: best macro F1 {result.val['macro_f1']:.4f} at epoch {result.best_epoch}")
    log_file.close()
    _report_final(work, node, rank)


def scratch_name(config: dict) -> str:
    """The job's node-local folder name: its id plus its Train storage. The same job of two
    experiments (another results folder, another user on the node) never shares a folder,
    and a resumed run, writing to the same storage, finds its own."""
    return f"{config['job_id']}-{stable_hash([config['storage'], config['job_id']])[:8]}"


def _scratch(name: str, rank: int, checkpoint) -> Path:
    """A fresh node-local folder holding exactly the last reported checkpoint, if any: every
    rank then resumes from the same epoch, whatever an earlier attempt left on this node."""
    work = Path(tempfile.gettempdir()) / "maskfold-jobs" / (name if rank == 0 else f"{name}.rank{rank}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if checkpoint is not None:
        with checkpoint.as_directory() as saved:
            copy_entries(Path(saved), work, os.listdir(saved))
    return work


def copy_entries(src: Path, dst: Path, names) -> None:
    """Copy the files and folders `names` (those that exist) from src to dst."""
    for name in names:
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name, dirs_exist_ok=True)
        elif (src / name).exists():
            shutil.copy2(src / name, dst / name)


def _report_final(work: Path, node: str, rank: int) -> None:
    """The last report: a checkpoint holding every output of the job, for the driver."""
    import ray.train

    from tasks.job_io import JobResult

    if rank:
        ray.train.report({"final": 1, "node": node})
        shutil.rmtree(work, ignore_errors=True)
        return
    result = JobResult.read(work)
    with tempfile.TemporaryDirectory() as tmp:
        copy_entries(work, Path(tmp), OUTPUT_FILES)
        ray.train.report({"final": 1, "node": node, "val_macro_f1": result.val["macro_f1"],
                          "epoch": result.epochs_run, "epochs": result.epochs_run, "seconds": result.seconds},
                         checkpoint=ray.train.Checkpoint.from_directory(tmp))
    shutil.rmtree(work, ignore_errors=True)


def _epoch_metrics(report: EpochReport, node: str) -> dict:
    return {"final": 0, "node": node, "worker_pid": os.getpid(), "epoch": report.epoch, "epochs": report.epochs,
            "val_macro_f1": report.val.macro_f1, "best_f1": report.best_f1, "train_loss": report.train_loss,
            "epoch_seconds": report.seconds}


def build_trainer(train_fn, config: dict, res: ResourcesSpec, callbacks: list):
    """One job's TorchTrainer: its slot, its retries from the last epoch, its run name."""
    import ray.train
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        train_fn,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=res.workers_per_job, use_gpu=res.slot == "GPU",
                                               resources_per_worker=worker_resources(res)),
        run_config=ray.train.RunConfig(
            name=config["job_id"], storage_path=config["storage"],
            # Ray's default retries a worker group that cannot start forever (the driver then
            # hangs at "running"); a bounded count fails the job with the worker's message.
            failure_config=ray.train.FailureConfig(max_failures=res.max_failures,
                                                   controller_failure_limit=START_RETRIES),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks),
    )


def run_trial(config: dict) -> None:
    """The Tune function trainable: one TorchTrainer run for one (model, fold) job."""
    from ray.tune.integration.ray_train import TuneReportCallback

    config = config["job"]
    res = ResourcesSpec.model_validate(config["spec"]["resources"])
    build_trainer(train_worker, config, res, [TuneReportCallback()]).fit()


def job_config(spec: Experiment, job_id: str, model: str, fold: int, storage: str) -> dict:
    """What a job's Train worker is given (train_worker's config): the small spec, never data; the
    fold's pseudo labels (a few hundred KB) travel with it, since results/ is on the driver."""
    config = {"spec": spec.model_dump(mode="json"), "job_id": job_id, "model": model, "fold": fold, "storage": storage}
    if spec.pseudo is not None:
        config["pseudo"] = file_bytes(spec.out_dir, fold)
    return config
