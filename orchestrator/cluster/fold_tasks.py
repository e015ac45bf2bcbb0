"""Work on the saved fold models, one Ray task per fold model, each holding a slot like a
training worker: `blend --reinfer`'s test logits, `explain --ray`'s Grad-CAMs and
`predict --address`'s logits of new photos (`ray_runner`, below).

A task gets the small spec and paths: it reads the images on its own node and the weights
from results/ when its node sees them, else from the job's final checkpoint in Train storage
(recorded in job.json), so results/ need not be on a filesystem every node sees.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

from orchestrator.cluster.slots.config import worker_resources
from tasks.errors import UserError
from tasks.spec.experiment import Experiment, ResourcesSpec


def task_options(res: ResourcesSpec) -> dict:
    """One task's resources: the slot (a GPU, or one unit of the custom resource) plus
    cpus_per_worker CPUs, as a training worker holds."""
    bundle = worker_resources(res)
    return {"num_cpus": bundle.pop("CPU"), "num_gpus": 1 if res.slot == "GPU" else 0, "resources": bundle}


@contextlib.contextmanager
def job_weights(local: Path, checkpoint: dict | None):
    """`local` if this node sees it, else best.pt fetched from the job's Train checkpoint."""
    if local.is_file() or not checkpoint:
        yield local
        return
    from orchestrator.cluster.storage import open_checkpoint
    from tasks.train.fold_models import InferError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            open_checkpoint(checkpoint["checkpoint"], checkpoint["storage"]).to_directory(tmp)
        except Exception as err:  # local and remote filesystems raise several types
            raise InferError(
                f"{local} is not on this node and the job's Train checkpoint {checkpoint['checkpoint']} could not "
                f"be read ({type(err).__name__}: {str(err)[:200]}). On a cluster, run with shared Train storage "
                "(--storage s3://... or MASKFOLD_STORAGE) or keep results/ on a filesystem every node sees.") from None
        yield Path(tmp) / "best.pt"


def job_checkpoint(out_dir: Path) -> dict | None:
    """Where the driver collected the job's outputs from (None for jobs run before it was kept)."""
    path = out_dir / "job.json"
    meta = json.loads(path.read_text()) if path.exists() else {}
    return {k: meta[k] for k in ("checkpoint", "storage")} if meta.get("checkpoint") else None


def run_fold_tasks(spec: Experiment, address: str | None, body: Callable, calls: dict[Hashable, tuple],
                   error: type[UserError], started: Callable[[int], None] = lambda slots: None
                   ) -> Iterator[tuple[Hashable, Any]]:
    """Run `body(*args)` as one task per key of `calls`; yield (key, result, or the task's own
    exception) as each finishes. A caller already connected to Ray (a script, a test) keeps its
    Ray; otherwise this connects as `run` does. Too few resources for one slot: `error`."""
    import ray

    from orchestrator.cluster.session import ResourceError, check_resources, ray_session

    with contextlib.nullcontext() if ray.is_initialized() else ray_session(spec, address):
        try:
            slots = check_resources(spec.resources)
        except ResourceError as err:
            raise error(str(err)) from None
        started(slots)
        remote = ray.remote(body).options(**task_options(spec.resources), max_retries=1)
        pending = {remote.remote(*args): key for key, args in calls.items()}
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            key = pending.pop(ref)
            try:
                yield key, ray.get(ref)
            except Exception as err:  # a task's own error arrives wrapped in RayTaskError
                yield key, getattr(err, "cause", None) or err


# `predict --address`: a task reads the photos the driver decoded when its node sees that cache
# (this machine, or a shared filesystem), else decodes them again on its node the same way (the
# photos must be on a filesystem it sees); the weights come from results/ or Train storage.

def predict_task(spec_dict: dict, member, checkpoint: dict | None, photos):
    """The Ray task body: (logits, node, seconds)."""
    import dataclasses
    import time

    import ray

    from tasks.log import silent
    from tasks.serving.images import decode_photos
    from tasks.serving.local import member_logits

    started = time.monotonic()
    member = dataclasses.replace(member, spec=Experiment.model_validate(spec_dict))
    with tempfile.TemporaryDirectory() as scratch, job_weights(member.weights, checkpoint) as weights:
        if not photos.cache.array_path.is_file():  # another node: decode here, as the driver did
            photos = decode_photos(photos.paths, member.decoding, Path(scratch), silent)
        logits = member_logits(dataclasses.replace(member, weights=weights), photos, silent)
    return logits, ray.util.get_node_ip_address(), time.monotonic() - started


def ray_runner(address: str | None):
    """`predict --address`'s runner (orchestrator.analysis.predictions.flow.Runner): `address` as
    `run` takes it, None for an embedded local Ray."""
    import dataclasses

    from orchestrator.analysis.predictions.ensemble import PredictError

    def run(members, photos, log):
        calls = {m.key: (m.spec.model_dump(mode="json"), dataclasses.replace(m, spec=None),
                         job_checkpoint(m.weights.parent), photos[m.decoding.key]) for m in members}
        logits, failures = {}, []

        def started(slots: int) -> None:
            log(f"  {len(calls)} fold models as Ray tasks, {slots} at a time")

        for key, out in run_fold_tasks(members[0].spec, address, predict_task, calls, PredictError, started):
            if isinstance(out, BaseException):
                failures.append(f"  {key}: {type(out).__name__}: {str(out).strip()[:500]}")
                log(f"  [{len(logits) + len(failures)}/{len(calls)}] FAILED {key}")
                continue
            logits[key], node, seconds = out
            log(f"  [{len(logits) + len(failures)}/{len(calls)}] {key}: {len(logits[key])} photos on {node} in "
                f"{seconds:.1f}s")
        if failures:
            raise PredictError(f"{len(failures)} of {len(calls)} fold models failed; nothing was written:\n"
                               + "\n".join(failures))
        return logits

    return run
