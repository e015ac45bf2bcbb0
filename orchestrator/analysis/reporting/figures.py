"""The report's plots, each returned as an <img> tag holding a base64 PNG (no files, no network).

matplotlib is imported inside each function: only the report draws, and the Agg-backed
Figure object needs no display and no global pyplot state.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score

from orchestrator.analysis.reporting.html import img
from tasks.labels import AGE_NAMES, CLASS_NAMES, GENDER_NAMES, MASK_NAMES, NUM_CLASSES, split_class

ATTRIBUTE_NAMES = {"mask": MASK_NAMES, "gender": GENDER_NAMES, "age": AGE_NAMES}
DPI = 100


def png(fig, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")  # tight: long tick labels never clipped
    return img(buffer.getvalue(), alt)


def matrix_axes(fig, ax, counts: np.ndarray, shade: np.ndarray, labels, fmt: str, bar_label: str,
                shade_range=(0.0, 1.0), cmap: str = "Blues", fontsize: float = 9) -> None:
    """Heat map of `shade` with `counts` written in each cell and a labelled colour bar."""
    image = ax.imshow(shade, cmap=cmap, vmin=shade_range[0], vmax=shade_range[1])
    ax.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 3 else 0,
                  ha="right" if len(labels) > 3 else "center", fontsize=fontsize)
    ax.set_yticks(range(len(labels)), labels, fontsize=fontsize)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label(bar_label, fontsize=fontsize)
    # White text where the cell is dark: the top of a sequential map, either end of a diverging one.
    position = (shade - shade_range[0]) / (shade_range[1] - shade_range[0])
    dark = np.abs(position - 0.5) > 0.35 if cmap == "RdBu_r" else position > 0.55
    for (i, j), v in np.ndenumerate(counts):
        if np.isfinite(v) and (v or fmt != "d"):  # zero counts left blank: the eye finds the errors
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=fontsize,
                    color="white" if dark[i, j] else "black")


def _row_share(counts: np.ndarray) -> np.ndarray:
    return counts / np.maximum(counts.sum(1, keepdims=True), 1)


def confusion_figure(target: np.ndarray, pred: np.ndarray) -> str:
    """The 18x18 matrix, large: counts in the cells, colour by share of the given class."""
    from matplotlib.figure import Figure

    counts = confusion_matrix(target, pred, labels=range(NUM_CLASSES))
    fig = Figure(figsize=(13, 11.5))
    ax = fig.subplots()
    matrix_axes(fig, ax, counts, _row_share(counts), CLASS_NAMES, "d",
                "share of the given class's images (each row sums to 1)", fontsize=10)
    ax.set_xlabel("predicted class (chosen blend, nested)", fontsize=12)
    ax.set_ylabel("given class (the training label)", fontsize=12)
    return png(fig, "18-class confusion matrix of the chosen blend's nested predictions")


def attribute_figure(target: np.ndarray, pred: np.ndarray) -> str:
    """Mask, gender and age band confusion side by side, each titled with its macro F1."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.3, 4.2), layout="constrained")
    for ax, (name, names), t, p in zip(fig.subplots(1, 3), ATTRIBUTE_NAMES.items(), split_class(target),
                                        split_class(pred)):
        counts = confusion_matrix(t, p, labels=range(len(names)))
        matrix_axes(fig, ax, counts, _row_share(counts), names, "d", "share of the given row", fontsize=11)
        ax.set_title(f"{name}: macro F1 {f1_score(t, p, average='macro', zero_division=0):.4f}", fontsize=12)
        ax.set_xlabel(f"predicted {name}", fontsize=11)
        ax.set_ylabel(f"given {name}", fontsize=11)
    return png(fig, "mask, gender and age band confusion matrices")


def correlation_figure(corr: pd.DataFrame) -> str:
    from matplotlib.figure import Figure

    size = 0.6 * len(corr) + 3.5
    fig = Figure(figsize=(size + 1.2, size))
    ax = fig.subplots()
    values = corr.to_numpy()
    matrix_axes(fig, ax, values, np.nan_to_num(values), list(corr.index), ".2f",
                "correlation of the two models' error indicators", (-1.0, 1.0), "RdBu_r", 10)
    return png(fig, "error correlation between models")


def curves_figure(model: str, curves: pd.DataFrame) -> str:
    """Validation macro F1 and train/validation loss per epoch, one colour per fold."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.6), layout="constrained")
    f1_ax, loss_ax = fig.subplots(1, 2)
    for i, (fold, rows) in enumerate(curves.sort_values("epoch").groupby("fold", sort=True)):
        colour = f"C{i % 10}"
        if "val_macro_f1" in rows:
            f1_ax.plot(rows.epoch, rows.val_macro_f1, "o-", color=colour, label=f"fold {fold}")
            best = rows.loc[rows.val_macro_f1.idxmax()]
            f1_ax.plot(best.epoch, best.val_macro_f1, "*", color=colour, markersize=14)
        for column, style, what in (("train_loss", "-", "train"), ("val_loss", "--", "val")):
            if column in rows:
                loss_ax.plot(rows.epoch, rows[column], style, color=colour, label=f"fold {fold} {what}")
    f1_ax.set_title(f"{model}: validation macro F1 (star: best epoch)", fontsize=11)
    loss_ax.set_title(f"{model}: loss (solid: train, dashed: validation)", fontsize=11)
    for ax, label in ((f1_ax, "macro F1"), (loss_ax, "loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncols=2)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return png(fig, f"training curves of {model}")
