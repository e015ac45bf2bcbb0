"""results/<experiment>/report.html, one self-contained page (CLI: `python -m orchestrator.report`).

Plots are PNGs and photos JPEGs embedded as base64, so the page can be mailed or attached as
it is; its only links are relative ones to the experiment's own files. The summary comes
first and fits one screen. The confusion matrices and per-class F1 use the chosen blend's
nested OOF predictions (each row predicted by the blend fitted without its fold), the
honest ones.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from orchestrator.analysis.ensembles.pooled import is_blend_folder
from orchestrator.analysis.ensembles.uncertainty import Interval
from orchestrator.analysis.reporting import figures
from orchestrator.analysis.reporting.crops import faces_section
from orchestrator.analysis.reporting.focus import explain_section
from orchestrator.analysis.reporting.html import (
    STYLE,
    esc,
    frame_table,
    glossary,
    methods_table,
    num,
    section,
    simple_head,
    table,
)
from orchestrator.analysis.reporting.inputs import read_audit, read_manifest
from orchestrator.analysis.reporting.label_audit import audit_section
from orchestrator.analysis.reporting.second_round import pseudo_section
from orchestrator.analysis.reporting.sources import (
    model_label,
    optimistic_models,
    optimistic_note,
    pooled_audit_section,
    pooled_jobs,
    report_sources,
    run_boards,
    source_rows,
)
from orchestrator.analysis.reporting.summary import summary_section
from orchestrator.analysis.results import OofLogits
from orchestrator.analysis.results_folder import ResultsError
from tasks.atomic import write_text
from tasks.labels import NUM_CLASSES
from tasks.metrics import score

CLASS_NAMES = figures.CLASS_NAMES
ATTRIBUTE_NAMES = figures.ATTRIBUTE_NAMES


@dataclass(frozen=True)
class BlendOutputs:
    weights: dict  # weights.json
    leaderboard: pd.DataFrame  # blend/leaderboard.csv
    predictions: pd.DataFrame  # blend/oof_predictions.parquet: target, in_sample, nested per image
    models: pd.DataFrame | None = None  # blend/models.csv (older blends have none)


def read_blend_outputs(exp_dir: Path) -> BlendOutputs:
    folder = exp_dir / "blend"
    needed = [folder / n for n in ("weights.json", "leaderboard.csv", "oof_predictions.parquet")]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise ResultsError(f"{folder}: missing {', '.join(missing)}; run python -m orchestrator.blend first")
    models = pd.read_csv(folder / "models.csv") if (folder / "models.csv").is_file() else None
    return BlendOutputs(json.loads(needed[0].read_text()), pd.read_csv(needed[1]), pd.read_parquet(needed[2]),
                        models)


def run_folds(run_boards: Mapping[str, Path]) -> pd.DataFrame | None:
    """Macro F1 per model and fold from each experiment's run leaderboard.csv, models under their
    names here (board prefix + model); None unless every board has them."""
    parts = []
    for prefix, path in run_boards.items():
        if not path.is_file():
            return None
        board = pd.read_csv(path, dtype={"fold": str})
        name = "model" if "model" in board.columns else "backbone"
        if not {"fold", "macro_f1", name} <= set(board.columns) or not board.fold.str.isdigit().any():
            return None
        folds = board[board.fold.str.isdigit()]
        own = (" (" + folds.target + " F1)").where(folds.target != "all", "") if "target" in folds else ""
        parts.append(pd.DataFrame({"model": prefix + folds[name].astype(str) + own, "fold": folds.fold,
                                   "macro_f1": folds.macro_f1}))
    return pd.concat(parts).pivot_table(index="model", columns="fold", values="macro_f1") if parts else None


def fold_table(oof: OofLogits, run_board: Path | Mapping[str, Path]) -> pd.DataFrame:
    """Macro F1 per model (rows) and fold (columns), from the run's leaderboard.csv (or each pooled
    experiment's: {model name prefix: path}) if it has them, else from the OOF logits; plus each
    model's pooled OOF macro F1."""
    preds = oof.logits.argmax(-1)
    table = run_folds(run_board if isinstance(run_board, Mapping) else {"": run_board})
    if table is None:
        table = pd.DataFrame({f"{k}": [score(oof.target[oof.fold == k], p[oof.fold == k]).macro_f1 for p in preds]
                              for k in np.unique(oof.fold)}, index=list(oof.models))
    table.columns = [f"fold {c}" for c in table.columns]
    table["fold mean"] = table.mean(axis=1)
    pooled = pd.Series({m: score(oof.target, p).macro_f1 for m, p in zip(oof.models, preds)})
    return table.assign(**{"OOF pooled": pooled}).rename_axis("model")


def error_correlation(oof: OofLogits) -> pd.DataFrame:
    """Pearson correlation between models' OOF error indicators: low means complementary."""
    errors = (oof.logits.argmax(-1) != oof.target[None]).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(errors) if len(errors) > 1 else np.ones((1, 1))
    return pd.DataFrame(np.atleast_2d(corr), index=list(oof.models), columns=list(oof.models))


def per_class_table(target: np.ndarray, pred: np.ndarray, offsets: dict) -> str:
    """Precision, recall and F1 per class with its support (images of that given class)."""
    precision, recall, f1, support = precision_recall_fscore_support(
        target, pred, labels=range(NUM_CLASSES), zero_division=0)
    predicted = np.bincount(pred, minlength=NUM_CLASSES)
    joint = offsets.get("classes") if any(offsets.get("classes") or ()) else None  # all zero: no offsets
    columns = ["class", "#", "support", "predicted", "precision", "recall", "F1"] + (["offset"] if joint else [])
    rows = [[esc(name), str(c), str(support[c]), str(predicted[c]), num(precision[c]), num(recall[c]),
             f'<span class="track"><span class="bar" style="width:{f1[c] * 100:.0f}%"></span></span>{f1[c]:.4f}']
            + ([f"{joint[c]:+.3f}"] if joint else []) for c, name in enumerate(CLASS_NAMES)]
    return table(simple_head(columns), rows)


def weights_section(w: dict, models: pd.DataFrame | None = None, optimistic: set[str] = frozenset()) -> str:
    """The chosen weights per model; with blend/models.csv also each model's OOF macro F1 alone
    (and its experiment, when several were pooled)."""
    names = list(w["weights"])
    frame = pd.DataFrame({"weight": [w["weights"][m] for m in names],
                          "temperature": [w.get("temperatures", {}).get(m, 1.0) for m in names]}, index=names)
    targets = w.get("targets") or {}
    if targets:  # with specialists: what each predicts (a specialist's macro F1 is its attribute's alone)
        frame.insert(0, "predicts", [targets.get(m, "all") for m in names])
    if models is not None:
        by = models.set_index("name").reindex(names)
        if len(w.get("experiments") or []) > 1:
            frame.insert(0, "experiment", by.experiment)
        frame["OOF macro F1 alone"] = [Interval(*v).text() if pd.notna(v[0]) else "" for v in
                                       by[["oof_macro_f1", "oof_macro_f1_low", "oof_macro_f1_high"]].to_numpy()]
    lines = []
    for group, values in w.get("offsets", {}).items():
        if not any(values):
            continue  # all zero: the method fits none
        if group == "classes":
            lines.append("<li>per class: see the offset column of the per-class table below</li>")
        else:
            classes = ATTRIBUTE_NAMES.get(group, [str(i) for i in range(len(values))])  # not `names`: the models'
            pairs = ", ".join(f"{esc(n)} <b>{v:+.3f}</b>" for n, v in zip(classes, values))
            lines.append(f"<li>{esc(group)}: {pairs}</li>")
    plain = ("a hard vote counts the models' predicted classes" if w.get("vote") == "hard"
             else "this method decides by the blended probabilities as they are")
    offsets = (f"<p>Offsets added to the log-scores before deciding:</p><ul>{''.join(lines)}</ul>" if lines
               else f"<p>No offsets: {plain}.</p>")
    per_attribute = attribute_weights_table(w, optimistic)
    return section("weights", "The chosen blend: weights, temperatures, offsets",
                   "A model's weight is its share of the averaged probabilities (0: not used); a temperature "
                   "above 1 softens that model's over-confident probabilities before averaging."
                   + (" A specialist's OOF macro F1 alone is of its attribute's classes." if targets else "")
                   + (" A per-attribute blend's weight here is the mean of its three attribute weights (below)."
                      if per_attribute else "") + optimistic_note(optimistic, names),
                   frame_table(frame.rename_axis("model"), labels=[model_label(n, optimistic) for n in names]),
                   per_attribute, offsets)


def attribute_weights_table(w: dict, optimistic: set[str] = frozenset()) -> str:
    """A per-attribute blend's weights: model x mask / gender / age band (empty for other methods)."""
    per = w.get("attribute_weights")
    if not per:
        return ""
    targets, names = w.get("targets") or {}, list(w["weights"])
    rows = [[model_label(m, optimistic), esc(targets.get(m, "all"))]
            + [f'<span class="track"><span class="bar" style="width:{per[a][m] * 100:.0f}%"></span></span>'
               f"{per[a][m]:.3f}" if m in per[a] else '<span title="does not predict it">&ndash;</span>'
               for a in ATTRIBUTE_NAMES] for m in names]
    return ("<h3>Weights per attribute</h3><p class=\"why\">Each attribute is blended from the models that predict "
            "it (an all-class model by its marginal probability over that attribute, a specialist by its own); "
            "each column sums to 1. &ndash;: the model does not predict that attribute.</p>"
            + table(simple_head(["model", "predicts", "mask", "gender", "age band"], text_columns=2), rows,
                    text_columns=2))


def curves_section(exp_dir: Path, jobs, optimistic: set[str] = frozenset()) -> str:
    why = ("Per epoch, from each job's metrics.csv; one colour per fold. Validation is the fold's held-out "
           "people, scored without TTA (the fold table above uses the saved OOF predictions, with TTA when "
           "the spec asks). A train loss falling while the validation loss rises is over-fitting.")
    if jobs.curves.empty:
        return section("curves", "Training curves", why, f"<p>No job metrics found under {esc(exp_dir / 'jobs')}"
                       " (a results folder copied without jobs/).</p>")
    parts = []
    for model, curves in jobs.curves.groupby("model", sort=False):
        logs = [(r.fold, r.log) for r in jobs.results[jobs.results.model == model].itertuples() if r.log]
        links = ", ".join(f'<a href="{esc(href)}">fold {esc(k)}</a>' for k, href in sorted(logs))
        parts.append(f"<h3>{model_label(str(model), optimistic)}</h3>" + (f"<p>Logs: {links}</p>" if links else "")
                     + figures.curves_figure(str(model), curves))
    return section("curves", "Training curves", why, *parts)


def build_report(exp_dir: Path, oof: OofLogits, blend: BlendOutputs, data_root: Path | None = None) -> str:
    w, pred = blend.weights, blend.predictions
    target, nested = pred.target.to_numpy(), pred.nested.to_numpy()
    sources, optimistic = report_sources(exp_dir, w), optimistic_models(w, blend.models)
    folds = fold_table(oof, run_boards(sources))
    jobs = pooled_jobs(exp_dir, sources)
    body = [
        summary_section(exp_dir, oof, blend, folds, read_manifest(sources[0].folder), jobs,
                        source_rows(exp_dir, sources, w), optimistic),
        section("methods", "Blend methods, best nested score first",
                "<b>Nested</b>: the method fitted on the other folds' OOF rows and scored on the held-out fold, "
                "pooled: the honest estimate, and what the choice is made by. <b>In-sample</b>: fitted and scored "
                "on the same rows, so it flatters. <b>True</b>: the submission scored against answers given to "
                "<code>blend --truth</code>. Hover a name for its recipe; all are explained below the table.",
                methods_table(blend.leaderboard, w["method"]), glossary(blend.leaderboard.method)),
        weights_section(w, blend.models, optimistic),
        section("per-class", "Per class (chosen blend, nested)",
                "Support: OOF images whose given label is the class; predicted: images the blend put there. "
                "Macro F1 is the plain mean of the F1 column, so a rare class weighs as much as a common one.",
                per_class_table(target, nested, w.get("offsets", {}))),
        section("confusion", "Confusion of the chosen blend (nested)",
                "Rows: the given label; columns: the prediction; numbers: image counts; colour: the share of the "
                "row, so that rare classes show too. The diagonal is right.",
                figures.confusion_figure(target, nested), figures.attribute_figure(target, nested)),
        section("folds", "Macro F1 by model and fold",
                "Each fold model scored on its held-out people at its best epoch; fold mean is their average, "
                "OOF pooled scores all held-out rows of a model together (what the blend starts from)."
                + optimistic_note(optimistic, folds.index),
                frame_table(folds, labels=[model_label(n, optimistic) for n in folds.index])),
        curves_section(exp_dir, jobs, optimistic),
        section("correlation", "Error correlation between models",
                "For two models, the Pearson correlation over OOF rows of their per-image error indicators "
                "(1 where a model's top class is wrong, else 0). 1: they fail on the same images, so "
                "blending them gains little; near 0 or negative: complementary.",
                figures.correlation_figure(error_correlation(oof))),
        audit_section(read_audit(exp_dir, data_root)) if not is_blend_folder(exp_dir) else
        pooled_audit_section(exp_dir, sources),
        faces_section(exp_dir, data_root),
        pseudo_section(exp_dir),
        explain_section(exp_dir),
    ]
    title = f"{esc(exp_dir.name)}: blend report"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(exp_dir: Path, oof: OofLogits, data_root: Path | None = None) -> Path:
    """Write report.html; `data_root` is where the audit's photos are (None: no thumbnails)."""
    path = exp_dir / "report.html"
    write_text(path, build_report(exp_dir, oof, read_blend_outputs(exp_dir), data_root))
    return path
