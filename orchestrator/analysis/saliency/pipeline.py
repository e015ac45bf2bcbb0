"""The explain step end to end: pick photos, run Grad-CAM per fold model, measure face focus,
write results/<name>/explain/. Reads the experiment and writes only under explain/.

`runner` computes the CAMs: by default one fold model after another in this process; the
CLI's `--ray` passes one that runs them as Ray tasks on the slot resource instead.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.analysis.saliency.boxes import FaceBoxes, load_face_boxes
from orchestrator.analysis.saliency.cam import NoCamLayer, box_share, face_focus, find_cam_layer
from orchestrator.analysis.saliency.figures import contact_sheet, focus_figure
from orchestrator.analysis.saliency.files import ExplainFolder
from orchestrator.analysis.saliency.selection import (
    FoldJob,
    JobCams,
    explain_job,
    explainable_jobs,
    oof_rows,
    pick_photos,
    suspect_people,
)
from tasks.atomic import atomic_path
from tasks.errors import UserError
from tasks.log import Log, to_stdout
from tasks.spec.experiment import Experiment

FOCUS_COLUMNS = ["model", "fold", "images", "face_focus", "box_share"]
SAMPLE_COLUMNS = 8  # sample tiles per fold on the sheet; face focus uses the whole sample

Work = list[tuple[FoldJob, pd.DataFrame]]
Runner = Callable[[Experiment, Work, object], Iterator[tuple[FoldJob, JobCams | Exception]]]


@dataclass(frozen=True)
class ExplainSummary:
    out_dir: Path
    layers: dict[str, str]  # model -> its CAM target layer
    skipped: dict[str, str]  # model -> why it was not explained
    focus: pd.DataFrame | None  # face_focus.csv's rows; None when no face boxes were known
    files: tuple[Path, ...]
    lost: dict[tuple[str, int], str] = field(default_factory=dict)  # (model, fold) left out -> why

    def lost_lines(self, n_splits: int) -> list[str]:
        """Per model that lost folds: which, why, and what its sheets show instead."""
        lines = []
        for model in dict.fromkeys(m for m, _ in self.lost):
            folds = {f: why for (m, f), why in self.lost.items() if m == model}
            kept = [str(f) for f in range(n_splits) if f not in folds]
            shown = (f"its sheets show fold{'s' if len(kept) > 1 else ''} {', '.join(kept)} only" if kept
                     else "nothing of it is shown")
            why = "; ".join(f"fold {f}: {reason}" for f, reason in folds.items())
            lines.append(f"{model} lost {len(folds)} of {n_splits} folds ({why}): {shown}")
        return lines


def local_runner(spec: Experiment, work: Work, dataset) -> Iterator[tuple[FoldJob, JobCams | Exception]]:
    """Fold models one after another here; one whose weights do not load is reported, the rest run."""
    for job, picks in work:
        try:
            yield job, explain_job(spec, job, picks, dataset)
        except UserError as err:  # InferError: missing or mismatched best.pt
            yield job, err


def cam_layers(spec: Experiment, models: Iterable[str], log: Log) -> tuple[dict[str, str], dict[str, str]]:
    """Each model's target layer, found on the architecture alone (no weights needed), and the skipped."""
    from tasks.train.model import build_model

    layers, skipped = {}, {}
    for name in models:
        model = spec.model(name)
        train = spec.train_for(model)
        body = build_model(model.model_copy(update={"pretrained": False, "pretrained_path": None}), train).body
        try:
            layer = find_cam_layer(body, train.input_size, model.backbone)
            layers[name] = layer.name
            log(f"{name}: Grad-CAM of {model.backbone} at {layer.name} ({layer.grid[0]}x{layer.grid[1]} cells)")
        except NoCamLayer as err:
            skipped[name] = str(err)
            log(f"{name}: skipped, no Grad-CAM target layer: {err}")
    return layers, skipped


def explain(spec: Experiment, exp_dir: Path, per_class: int = 2, sample: int = 32, boxes_file: Path | None = None,
            runner: Runner = local_runner, log: Log = to_stdout) -> ExplainSummary:
    from orchestrator.analysis.pseudo_labels.outputs import saved_hashes
    from orchestrator.analysis.results_folder import rows_hash_as_run
    from tasks.data.preparation import load_dataset

    folder = ExplainFolder.open(exp_dir)  # before any work: an explain/ that cannot be a folder stops it
    dataset = load_dataset(spec, verbose=False)
    found = explainable_jobs(spec, exp_dir, rows_hash_as_run(exp_dir, dataset), saved_hashes(spec))
    jobs = found.jobs
    boxes = load_face_boxes(exp_dir, dataset, spec.data.root, boxes_file)
    log(f"face boxes: {boxes.source}" if boxes else
        "face focus skipped: no faces.parquet (the experiment ran without data.face) and no --boxes FILE "
        "(e.g. data/synth/truth/face_boxes.csv)")
    moved = sorted(m.name for m in spec.models if spec.train_for(m).augment.eval)
    if boxes and moved:
        log(f"note: {', '.join(moved)} have an eval pipeline; face focus assumes it moves no pixels (a crop or "
            "flip there would misplace the face boxes)")
    layers, skipped = cam_layers(spec, dict.fromkeys(j.model for j in jobs), log)
    lost = {key: why for key, why in found.lost.items() if key[0] not in skipped}
    for (model, fold), why in lost.items():
        log(f"{model} fold {fold}: left out: {why}")
    rows = oof_rows([j for j in jobs if j.model in layers], set(dataset.train["image_key"]))
    suspects = suspect_people(exp_dir)
    picks = {m: pick_photos(rows[rows["model"] == m].reset_index(drop=True), per_class, sample, suspects, spec.seed)
             for m in layers}
    work = [(j, picks[j.model][picks[j.model]["fold"] == j.fold]) for j in jobs if j.model in layers]
    done = {m: {} for m in layers}
    for n, (job, out) in enumerate(runner(spec, work, dataset), start=1):
        if isinstance(out, Exception):  # this fold is left out; the model's other folds are kept
            lost[(job.model, job.fold)] = f"{type(out).__name__}: {out}"
            log(f"  [{n}/{len(work)}] {job.model} fold {job.fold}: FAILED {out}")
            continue
        done[job.model][job.fold] = out
        log(f"  [{n}/{len(work)}] {job.model} fold {job.fold}: {len(out.cams)} CAMs")
    summary = _write(folder, picks, done, boxes, layers, skipped, log)
    return replace(summary, lost=dict(sorted(lost.items())))


def _write(folder: ExplainFolder, picks: dict[str, pd.DataFrame], done: dict, boxes: FaceBoxes | None,
           layers: dict, skipped: dict, log: Log) -> ExplainSummary:
    out = folder.path
    files, focus_rows = [], []
    for model, table in picks.items():
        if not done[model]:
            continue
        tiles, images, cams = _assemble(table, done[model])
        fractions = boxes.fractions(tiles["image_key"]) if boxes else np.full((len(tiles), 4), np.nan)
        files += _sheets(out, model, tiles, images, cams, fractions)
        if boxes:
            focus_rows += _focus(model, tiles, cams, fractions)
    focus = pd.DataFrame(focus_rows, columns=FOCUS_COLUMNS) if boxes else None
    if focus is not None and focus.empty:
        log(f"face focus skipped: none of the sampled photos has a face box in {boxes.source}")
    if focus is not None and len(focus):
        with atomic_path(out / "face_focus.csv") as tmp:
            focus.to_csv(tmp, index=False, float_format="%.4f")
        files += [out / "face_focus.csv", focus_figure(out / "face_focus.png", focus)]
    folder.commit(files)  # deletes only what an earlier explain wrote and this one did not
    log(f"wrote {len(files)} files to {out}/")
    return ExplainSummary(out, layers, skipped, focus, tuple(files))


def _assemble(table: pd.DataFrame, by_fold: dict[int, JobCams]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The model's picks of the folds that ran, and their images and CAMs, in one order."""
    parts = [(table[table["fold"] == f], cams) for f, cams in sorted(by_fold.items())]
    tiles = pd.concat([p for p, _ in parts], ignore_index=True)
    return tiles, np.concatenate([c.images for _, c in parts]), np.concatenate([c.cams for _, c in parts])


def _sheets(out: Path, model: str, tiles: pd.DataFrame, images, cams, fractions) -> list[Path]:
    written = []
    kinds = {"mistake": ("mistakes", "the most confident mistakes per given class", None, SAMPLE_COLUMNS),
             "suspect": ("suspects", "the audit's suspects, then people worth a look (rows: person)", "person", 7),
             "sample": ("sample", "a random sample of OOF photos (rows: fold)", "fold_name", SAMPLE_COLUMNS)}
    tiles = tiles.assign(fold_name="fold " + tiles["fold"].astype(str))
    for kind, (stem, what, row_of, columns) in kinds.items():
        mask = (tiles["kind"] == kind).to_numpy()
        if not mask.any():
            continue
        chosen = tiles[mask].reset_index(drop=True)
        written.append(contact_sheet(out / f"{stem}_{model}.png", f"{model}: Grad-CAM of the predicted class on {what}",
                                     chosen, images[mask], cams[mask], fractions[mask], row_of, columns))
    return written


def _focus(model: str, tiles: pd.DataFrame, cams: np.ndarray, fractions: np.ndarray) -> list[list]:
    """Per fold over its sample: mean share of CAM mass in the face box, and of pixels in it."""
    rows = []
    sample = (tiles["kind"] == "sample").to_numpy()
    for fold in sorted(tiles.loc[sample, "fold"].unique()):
        index = np.flatnonzero(sample & (tiles["fold"] == fold).to_numpy())
        focus = np.array([face_focus(cams[i], fractions[i]) for i in index])
        share = np.array([box_share(cams[i].shape, fractions[i]) for i in index])
        known = np.isfinite(focus)
        if known.any():
            rows.append([model, int(fold), int(known.sum()), float(focus[known].mean()), float(share[known].mean())])
    return rows
