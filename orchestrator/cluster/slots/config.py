"""What a job's Train worker is given, and what it holds.

Workers get the small spec and paths, never data: they index the data and open the
decode-once cache on their own node (orchestrator.cluster.slots.worker).
"""
from __future__ import annotations

from tasks.pseudo.fold_sets import file_bytes
from tasks.spec.experiment import Experiment, ResourcesSpec


def worker_resources(res: ResourcesSpec) -> dict[str, float]:
    """One Train worker's bundle. With use_gpu=True Ray adds the GPU itself."""
    bundle = {"CPU": res.cpus_per_worker}
    if res.slot != "GPU":
        bundle[res.slot] = 1
    if res.accelerator_type:
        bundle[f"accelerator_type:{res.accelerator_type}"] = 0.001
    return bundle


def job_config(spec: Experiment, job_id: str, model: str, fold: int, storage: str, channel: str = "run",
               repeat: int = 0, epochs: int | None = None) -> dict:
    """A job as the slots' queue hands it out: the small spec, never data; the fold's pseudo
    labels (a few hundred KB) travel with it, since results/ is on the driver. `channel`: who
    reads its events (the K-fold driver, or a search's trial). `epochs`: a refit job's count."""
    config = {"spec": spec.model_dump(mode="json"), "job_id": job_id, "model": model, "fold": fold,
              "repeat": repeat, "storage": storage, "channel": channel}
    if epochs is not None:
        config["epochs"] = epochs
    if spec.pseudo is not None:
        config["pseudo"] = file_bytes(spec.out_dir, fold)
    return config
