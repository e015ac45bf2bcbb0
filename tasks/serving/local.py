"""The fold models run with torch on this machine (CPU or one GPU), batched as the eval loader
batches: each through `tasks.train.fold_models`, the very code that re-infers the eval photos."""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tasks.log import Log
from tasks.serving.images import DecodedPhotos
from tasks.serving.members import FoldMember
from tasks.spec.refit import REFIT_FOLD

PROGRESS_SECONDS = 5.0
BATCHES_PER_CHUNK = 16  # rows go in chunks of whole loader batches: the batches stay the eval path's


def member_logits(member: FoldMember, photos: DecodedPhotos, log: Log, label: str = "") -> np.ndarray:
    """(readable photos, 18) float32 logits of one fold model, in the photos' order."""
    from tasks.train.fold_models import infer_rows, load_fold_model

    fm = load_fold_model(member.spec, member.spec_model, member.fold, member.weights)
    keys = photos.readable
    chunk = fm.train.batch_size * 2 * BATCHES_PER_CHUNK  # eval_loader's batch is batch_size * 2
    out, started, shown = [], time.monotonic(), time.monotonic()
    for at in range(0, len(keys), chunk):
        rows = pd.DataFrame({"image_key": keys[at:at + chunk]})
        out.append(infer_rows(fm, photos.cache, rows))  # the model's own TTA, as for the eval photos
        done = min(at + chunk, len(keys))
        if time.monotonic() - shown >= PROGRESS_SECONDS and done < len(keys):
            shown = time.monotonic()
            log(f"  {label}{member.key}: {done}/{len(keys)} photos ({done / (shown - started):.0f} photos/s)")
    return np.concatenate(out) if out else np.zeros((0, 18), np.float32)


def torch_logits(members: Sequence[FoldMember], photos: dict[str, DecodedPhotos], log: Log) -> dict[str, np.ndarray]:
    """Every member's logits over its decoding's photos, one after another, with a line per member."""
    logits = {}
    for i, member in enumerate(members, start=1):
        started = time.monotonic()
        label = f"[{i}/{len(members)}] "
        logits[member.key] = member_logits(member, photos[member.decoding.key], log, label)
        seconds = time.monotonic() - started
        n = len(logits[member.key])
        which = "refit" if member.fold == REFIT_FOLD else f"fold {member.fold}"
        log(f"  {label}{member.key} ({member.model} {which}): {n} photos in {seconds:.1f}s "
            f"({n / max(seconds, 1e-9):.0f} photos/s)")
    return logits
