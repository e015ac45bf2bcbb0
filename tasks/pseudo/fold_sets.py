"""A fold's pseudo-labelled eval photos: the file the driver writes, what a job trains on.

results/<name>/pseudo/fold<k>.parquet holds, per eval photo the fold-k job learns from, its
ImageID, the pseudo label, that label's probability (confidence) and the blended probabilities.
The driver builds these files (orchestrator.analysis.pseudo_labels.labelling); a job only reads its own
fold's, and the set's hash is part of the job's identity.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.atomic import atomic_path
from tasks.data.batches import Samples
from tasks.data.cache import ImageCache
from tasks.errors import UserError
from tasks.labels import NUM_CLASSES
from tasks.spec.pseudo import PseudoSpec

SCHEMA = pa.schema([("image_id", pa.string()), ("label", pa.int8()), ("confidence", pa.float32()),
                    ("prob", pa.list_(pa.float32(), NUM_CLASSES))])


class PseudoError(UserError, ValueError):
    """Pseudo labels that cannot be used: missing, unreadable, or for other eval photos."""


@dataclass(frozen=True)
class PseudoSet:
    """The eval photos one fold's jobs train on, with their round-1 labels."""

    image_id: np.ndarray  # (N,) eval ImageIDs
    label: np.ndarray  # (N,) int: the blend's decision
    confidence: np.ndarray  # (N,) float32: the blend's probability of `label`
    prob: np.ndarray  # (N, 18) float32: the blend's probabilities

    def __len__(self) -> int:
        return len(self.image_id)

    def table(self, meta: dict[str, str] | None = None) -> pa.Table:
        flat = pa.array(self.prob.astype(np.float32).ravel(), pa.float32())
        table = pa.table([pa.array(self.image_id.astype(str), pa.string()), pa.array(self.label, pa.int8()),
                          pa.array(self.confidence, pa.float32()),
                          pa.FixedSizeListArray.from_arrays(flat, NUM_CLASSES)], schema=SCHEMA)
        return table.replace_schema_metadata({f"maskfold_{k}": str(v) for k, v in (meta or {}).items()})


def pseudo_path(out_dir: Path, fold: int) -> Path:
    return Path(out_dir) / "pseudo" / f"fold{fold}.parquet"


def write_pseudo(path: Path, rows: PseudoSet, meta: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(rows.table(meta), tmp)


def read_pseudo(source: Path | bytes) -> PseudoSet:
    """A fold's set from its file (or the file's bytes, as a remote job gets them)."""
    name = "pseudo labels" if isinstance(source, bytes) else str(source)
    try:
        table = pq.read_table(io.BytesIO(source) if isinstance(source, bytes) else source)
    except FileNotFoundError:
        raise PseudoError(f"{name}: no such file; `python -m orchestrator.run` builds the pseudo labels "
                          "before it plans the jobs") from None
    except (pa.ArrowException, OSError) as err:
        raise PseudoError(f"{name}: cannot be read as pseudo labels ({err}); run the experiment again "
                          "to rebuild them") from None
    if not table.schema.remove_metadata().equals(SCHEMA):
        raise PseudoError(f"{name}: columns {table.schema.names}, expected {SCHEMA.names}")
    prob = table["prob"].combine_chunks().flatten().to_numpy().reshape(-1, NUM_CLASSES)
    return PseudoSet(table["image_id"].to_numpy(zero_copy_only=False).astype(object),
                     table["label"].to_numpy().astype(np.int64), table["confidence"].to_numpy(), prob)


def file_bytes(out_dir: Path, fold: int) -> bytes:
    path = pseudo_path(out_dir, fold)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PseudoError(f"{path}: no such file; `python -m orchestrator.run` builds it") from None


def pseudo_hash(rows: PseudoSet, spec: PseudoSpec) -> str:
    """The identity of what a job learns from these rows: which photos, their targets (the label,
    or the probabilities with `soft`) and their loss weight. Other settings (threshold, cap,
    source) enter only through the rows they select, so a change that leaves a fold's rows
    alone leaves its jobs finished."""
    digest = hashlib.sha256(f"soft={spec.soft};weight={spec.weight!r}\n".encode())
    digest.update("\n".join(map(str, rows.image_id)).encode())
    digest.update((rows.prob.astype(np.float32) if spec.soft else rows.label.astype(np.int64)).tobytes())
    return digest.hexdigest()[:16]


def pseudo_samples(rows: PseudoSet, spec: PseudoSpec, cache: ImageCache) -> Samples:
    """The rows as training samples from the eval cache: age unknown (NaN), weight `spec.weight`.
    Photos the cache could not decode (blanked) are left out."""
    known = set(cache.keys)
    strangers = [k for k in rows.image_id if k not in known]
    if strangers:
        raise PseudoError(f"{len(strangers)} pseudo-labelled photos are not in this experiment's eval set, e.g. "
                          f"{strangers[0]}; the labels were made for other eval data: run the experiment again")
    usable = cache.ok[cache.rows(rows.image_id)]
    targets = rows.prob[usable] if spec.soft else rows.label[usable]
    return Samples.of(cache, rows.image_id[usable], targets, np.full(int(usable.sum()), np.nan), spec.weight)
