"""`predict --address`: one Ray task per fold model over the cluster's slots, through the fan-out
`blend --reinfer` and `explain --ray` use (fold_tasks.run_fold_tasks).

A task reads the photos the driver decoded when its node sees that cache (this machine, or a
shared filesystem), else decodes them again on its node the same way (the photos must be on a
filesystem it sees); the weights come from results/ or the job's Train checkpoint (job_weights).
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from orchestrator.analysis.predictions.ensemble import PredictError
from orchestrator.cluster.fold_tasks import job_checkpoint, job_weights, run_fold_tasks
from tasks.log import Log, silent
from tasks.predict.images import DecodedPhotos, decode_photos
from tasks.predict.members import FoldMember


def predict_task(spec_dict: dict, member: FoldMember, checkpoint: dict | None, photos: DecodedPhotos):
    """The Ray task body: (logits, node, seconds)."""
    import ray

    from tasks.predict.local import member_logits
    from tasks.spec.experiment import Experiment

    started = time.monotonic()
    member = dataclasses.replace(member, spec=Experiment.model_validate(spec_dict))
    with tempfile.TemporaryDirectory() as scratch, job_weights(member.weights, checkpoint) as weights:
        if not photos.cache.array_path.is_file():  # another node: decode here, as the driver did
            photos = decode_photos(photos.paths, member.decoding, Path(scratch), silent)
        logits = member_logits(dataclasses.replace(member, weights=weights), photos, silent)
    return logits, ray.util.get_node_ip_address(), time.monotonic() - started


def ray_runner(address: str | None):
    """A runner (orchestrator.analysis.predictions.flow.Runner) on Ray: `address` as `run` takes it,
    None for an embedded local Ray."""

    def run(members: Sequence[FoldMember], photos: dict[str, DecodedPhotos], log: Log) -> dict[str, np.ndarray]:
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
