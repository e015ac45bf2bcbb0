"""Which photos to explain, with which fold model, and the CAMs of one fold model on them.

Every photo is explained by the fold model that held it out (its own OOF photo), for the
class that model's saved OOF logits predict. Per model: per true class the `per_class` most
confident mistakes; the photos of the audit's top suspects; and per fold a random sample
(seeded by the spec's seed) over which face focus is measured. Nothing here writes files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.analysis.saliency.cam import find_cam_layer, grad_cams
from tasks.errors import UserError
from tasks.job_io import planned_jobs, unfinished_reason
from tasks.logits import read_logits
from tasks.spec.experiment import Experiment

SUSPECT_PEOPLE = 4  # suspects drawn per model: each is a row of up to seven photos
NEEDS = ("result.json", "oof.parquet", "best.pt")  # what a fold model needs to be explained


class ExplainError(UserError):
    """Nothing to explain, or an input (boxes file, results) the user must fix."""


@dataclass(frozen=True)
class FoldJob:
    model: str
    fold: int
    out_dir: Path


@dataclass(frozen=True)
class JobCams:
    """One fold model's CAMs on its picked photos, in the picks' order."""

    layer: str
    images: np.ndarray  # (N, H, W, 3) uint8: what the model saw (cached image, eval pipeline, input size)
    cams: np.ndarray  # (N, H, W) float32 in [0, 1]


@dataclass(frozen=True)
class ExplainableJobs:
    jobs: list[FoldJob]  # the spec's planned jobs with weights and OOF logits
    lost: dict[tuple[str, int], str]  # the others, and why each cannot be explained


def explainable_jobs(spec: Experiment, exp_dir: Path, rows_hash: str, pseudo: dict[int, str] | None) -> ExplainableJobs:
    """The spec's planned jobs (its models' settings on these rows), split into those explain
    can use and the others with the reason; ExplainError if none can be used."""
    jobs, lost = [], {}
    for planned in planned_jobs(spec, rows_hash, pseudo, exp_dir / "jobs"):
        if planned.repeat:  # explain reads oof.parquet, repeat 0's rows: its fold models explain them
            continue
        target = spec.train_for(spec.model(planned.model)).target
        if target != "all":  # its predictions are of one attribute, not the 18 classes the sheets show
            lost[(planned.model, planned.fold)] = f"a {target} specialist (train.target): explain draws all-class models"
            continue
        why = unfinished_reason(planned.out_dir, needs=NEEDS) if planned.out_dir.exists() else None
        if planned.out_dir.exists() and why is None:
            jobs.append(FoldJob(planned.model, planned.fold, planned.out_dir))
        else:
            lost[(planned.model, planned.fold)] = (f"{why} in {planned.out_dir}" if why else
                                                   f"not run with these settings (no {planned.out_dir})")
    if not jobs:
        names = ", ".join(m.name for m in spec.models)
        raise ExplainError(f"{exp_dir}/jobs: no finished job (result.json, oof.parquet and best.pt) of the "
                           f"models in spec.yaml ({names}) with its settings and data; run the experiment first "
                           f"(python -m orchestrator.run {exp_dir / 'spec.yaml'})")
    return ExplainableJobs(jobs, lost)


def oof_rows(jobs: list[FoldJob], known_keys: set[str]) -> pd.DataFrame:
    """Every job's OOF photos: model, fold, image_key, person, target, pred, confidence (of pred)."""
    frames = []
    for job in jobs:
        frame, logits, _ = read_logits(job.out_dir / "oof.parquet")
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        pred = probs.argmax(1)
        frames.append(pd.DataFrame({"model": job.model, "fold": job.fold, "image_key": frame["image_key"],
                                    "person": frame["person"].astype(str), "target": frame["target"].astype(int),
                                    "pred": pred, "confidence": probs[np.arange(len(pred)), pred]}))
    columns = ["model", "fold", "image_key", "person", "target", "pred", "confidence"]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return rows[rows["image_key"].isin(known_keys)].reset_index(drop=True)


def pick_photos(rows: pd.DataFrame, per_class: int, sample: int, suspects: list[str], seed: int) -> pd.DataFrame:
    """`rows` (one model's OOF photos) picked and tagged with kind = mistake | suspect | sample.

    A photo may be picked for several kinds; it then appears once per kind.
    """
    wrong = rows[rows["pred"] != rows["target"]].sort_values(["target", "confidence"], ascending=[True, False])
    mistakes = wrong.groupby("target", sort=True).head(per_class).assign(kind="mistake")
    order = {p: i for i, p in enumerate(suspects)}
    chosen = rows[rows["person"].isin(order)]
    chosen = chosen.assign(_o=chosen["person"].map(order)).sort_values(["_o", "image_key"]).drop(columns="_o")
    samples = []
    for fold, group in rows.groupby("fold", sort=True):
        rng = np.random.default_rng([seed, int(fold)])
        take = rng.choice(len(group), size=min(sample, len(group)), replace=False)
        samples.append(group.iloc[np.sort(take)])
    sampled = pd.concat(samples).assign(kind="sample") if samples else rows[:0].assign(kind="sample")
    return pd.concat([mistakes, chosen.assign(kind="suspect"), sampled], ignore_index=True)


def suspect_people(exp_dir: Path, count: int = SUSPECT_PEOPLE) -> list[str]:
    """The audit's top suspects (audit.csv, best first), then its people worth a look up to
    `count`: with no one past the cut, as in a small run, the sheet still shows the doubtful
    ones. [] without an audit."""
    from orchestrator.analysis.mislabels.suspects import pick_review, pick_suspects

    path = exp_dir / "audit.csv"
    if not path.is_file():
        return []
    table = pd.read_csv(path, dtype={"person": str, "given": str, "suggested": str})
    if not {"person", "attribute", "rank"} <= set(table.columns):
        return []
    if "p_wrong" in table.columns and "suspect" in table.columns:
        table = table.sort_values("p_wrong", ascending=False, kind="stable")
    review = pick_review(table, count)
    if "p_wrong" in review.columns:
        review = review.sort_values("p_wrong", ascending=False, kind="stable")
    people = list(pick_suspects(table, count)["person"].astype(str)) + list(review["person"].astype(str))
    return list(dict.fromkeys(people))[:count]


def explain_job(spec: Experiment, job: FoldJob, picks: pd.DataFrame, dataset, weights: Path | None = None) -> JobCams:
    """Grad-CAMs of one fold model on its picked OOF photos. NoCamLayer if the backbone has no
    target layer; InferError if the weights do not load."""
    import torch

    from tasks.data.batches import CachedImages, Samples, to_device
    from tasks.train.fold_models import load_fold_model

    fm = load_fold_model(spec, job.model, job.fold, weights or job.out_dir / "best.pt")
    layer = find_cam_layer(fm.net.body, fm.train.input_size, spec.model(job.model).backbone)
    n = len(picks)
    data = CachedImages(Samples.of(dataset.train_cache, picks["image_key"], np.zeros(n, np.int64), np.zeros(n)),
                        fm.train.augment.eval, fm.train.input_size)
    images = torch.stack([data[i][0] for i in range(n)]) if n else torch.zeros(0, *fm.train.input_size, 3,
                                                                                 dtype=torch.uint8)
    x = to_device(images, *fm.norm, fm.device.device, channels_last=False)
    cams = grad_cams(fm.net.float(), layer, x, picks["pred"].to_numpy())
    return JobCams(layer.name, images.numpy(), cams)
