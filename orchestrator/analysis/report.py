"""results/<experiment>/report.html, one self-contained page (CLI: `python -m orchestrator.report`).

Plots are PNGs embedded as base64, so the page can be mailed or attached as it is. The
confusion matrices and per-class F1 use the chosen blend's nested OOF predictions (each
row predicted by the blend fitted without its fold), the honest ones.
"""
from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score

from orchestrator.analysis.experiment import BlendError
from orchestrator.analysis.results import OofLogits
from tasks.atomic import write_text
from tasks.labels import AGE_NAMES, GENDER_NAMES, MASK_NAMES, NUM_CLASSES, split_class
from tasks.metrics import score

CLASS_NAMES = tuple(f"{c} {MASK_NAMES[m]}/{GENDER_NAMES[g]}/{AGE_NAMES[a]}"
                    for c, (m, g, a) in enumerate(zip(*split_class(np.arange(NUM_CLASSES)))))
ATTRIBUTE_NAMES = {"mask": MASK_NAMES, "gender": GENDER_NAMES, "age": AGE_NAMES}


@dataclass(frozen=True)
class BlendOutputs:
    weights: dict  # weights.json
    leaderboard: pd.DataFrame  # blend/leaderboard.csv
    predictions: pd.DataFrame  # blend/oof_predictions.parquet: target, in_sample, nested per image


def read_blend_outputs(exp_dir: Path) -> BlendOutputs:
    folder = exp_dir / "blend"
    needed = [folder / n for n in ("weights.json", "leaderboard.csv", "oof_predictions.parquet")]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise BlendError(f"{folder}: missing {', '.join(missing)}; run python -m orchestrator.blend first")
    return BlendOutputs(json.loads(needed[0].read_text()), pd.read_csv(needed[1]), pd.read_parquet(needed[2]))


def fold_table(oof: OofLogits, run_board: Path) -> pd.DataFrame:
    """Macro F1 per model (rows) and fold (columns), from the run's leaderboard.csv if it has
    them, else from the OOF logits; plus each model's pooled OOF macro F1."""
    preds = oof.logits.argmax(-1)
    table = None
    if run_board.is_file():
        board = pd.read_csv(run_board, dtype={"fold": str})
        name = "model" if "model" in board.columns else "backbone"
        folds = board[board.fold.str.isdigit()] if {"fold", "macro_f1", name} <= set(board.columns) else board[:0]
        if len(folds):
            table = folds.pivot_table(index=name, columns="fold", values="macro_f1")
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


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _matrix_axes(ax, matrix: np.ndarray, labels, title: str, shade: np.ndarray, fmt: str) -> None:
    ax.imshow(shade, cmap="Blues", vmin=0, vmax=max(float(np.nanmax(shade)), 1e-9))
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    for (i, j), v in np.ndenumerate(matrix):
        if np.isfinite(v) and v:
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=6,
                    color="white" if shade[i, j] > 0.6 * np.nanmax(shade) else "black")


def confusion_figures(target: np.ndarray, pred: np.ndarray) -> str:
    from matplotlib.figure import Figure  # deferred: only the report draws

    full = confusion_matrix(target, pred, labels=range(NUM_CLASSES))
    fig = Figure(figsize=(10, 9))
    ax = fig.subplots()
    _matrix_axes(ax, full, CLASS_NAMES, "18 classes (rows: given label, columns: prediction; shade: row share)",
                 full / np.maximum(full.sum(1, keepdims=True), 1), "d")
    ax.set_xlabel("predicted")
    ax.set_ylabel("given")
    parts = Figure(figsize=(12, 3.6))
    for ax, (name, names), t, p in zip(parts.subplots(1, 3), ATTRIBUTE_NAMES.items(), split_class(target),
                                        split_class(pred)):
        m = confusion_matrix(t, p, labels=range(len(names)))
        _matrix_axes(ax, m, names, f"{name}: F1 {f1_score(t, p, average='macro'):.4f}",
                     m / np.maximum(m.sum(1, keepdims=True), 1), "d")
    return _png(fig) + _png(parts)


def bar_figure(labels, values: np.ndarray, title: str, xlabel: str) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 0.28 * len(labels) + 1.2))
    ax = fig.subplots()
    ax.barh(range(len(labels)), values, color="tab:blue")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.3f}", va="center", fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    return _png(fig)


def correlation_figure(corr: pd.DataFrame) -> str:
    from matplotlib.figure import Figure

    size = 0.45 * len(corr) + 2.5
    fig = Figure(figsize=(size, size))
    values = corr.to_numpy()
    _matrix_axes(fig.subplots(), values, list(corr.index), "OOF error correlation between models",
                 np.nan_to_num(values), ".2f")
    return _png(fig)


def _table(frame: pd.DataFrame, index: bool = True) -> str:
    return frame.to_html(index=index, float_format=lambda v: f"{v:.4f}", border=0, na_rep="")


def _section(title: str, *body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n" + "\n".join(body)


def build_report(exp_dir: Path, oof: OofLogits, blend: BlendOutputs) -> str:
    w, pred = blend.weights, blend.predictions
    nested, ins = w["nested"], w["in_sample"]
    per_class = f1_score(pred.target, pred.nested, labels=range(NUM_CLASSES), average=None, zero_division=0)
    weights = pd.DataFrame({"weight": w["weights"], "temperature": w["temperatures"]}).rename_axis("model")
    offsets = pd.DataFrame({g: pd.Series(v) for g, v in w["offsets"].items()}).T
    excluded = "".join(f"<li>{html.escape(e['model'])}: {html.escape(e['reason'])}</li>" for e in w["excluded"])
    summary = (f"<p>Chosen blend <b>{html.escape(w['method'])}</b> (chosen by nested {html.escape(w['metric'])}). "
               f"Nested macro F1 <b>{nested['macro_f1']:.4f}</b> (accuracy {nested['accuracy']:.4f}); "
               f"in-sample {ins['macro_f1']:.4f}. {len(oof.models)} models, {len(oof.target)} OOF rows, "
               f"rows hash {html.escape(w.get('rows_hash', w.get('spec_hash', '?')))}.</p><p>Nested: each method is fitted on the other folds' "
               f"OOF rows and scored on the held-out fold. The chosen method is the best of "
               f"{len(blend.leaderboard)}, so its nested score is itself slightly optimistic.</p>")
    body = [
        _section("Summary", summary, f"<p>Excluded:</p><ul>{excluded}</ul>" if excluded else ""),
        _section("Blend methods: in-sample vs nested", _table(blend.leaderboard, index=False)),
        _section("Blend weights", _table(weights), "<p>Per-class log-score offsets:</p>", _table(offsets),
                 bar_figure(list(weights.index), weights.weight.to_numpy(), "blend weight per model", "weight")),
        _section("Confusion of the chosen blend (nested OOF predictions)",
                 confusion_figures(pred.target.to_numpy(), pred.nested.to_numpy())),
        _section("Per-class F1 (nested)", bar_figure(CLASS_NAMES, per_class, "F1 per class", "F1")),
        _section("Macro F1 by fold and model", _table(fold_table(oof, exp_dir / "leaderboard.csv"))),
        _section("Model-to-model OOF error correlation", correlation_figure(error_correlation(oof))),
    ]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
             "font-size:12px}td,th{padding:2px 8px;text-align:right}tr:nth-child(even){background:#f4f4f4}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(exp_dir.name)} blend report"
            f"</title><style>{style}</style></head><body>\n<h1>{html.escape(exp_dir.name)}: blend report</h1>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(exp_dir: Path, oof: OofLogits) -> Path:
    path = exp_dir / "report.html"
    write_text(path, build_report(exp_dir, oof, read_blend_outputs(exp_dir)))
    return path
