"""The explain step's PNGs: contact sheets of CAM overlays, and the face focus strip.

A tile is the image the model saw with its Grad-CAM over it (jet: red = where the predicted
class's evidence is) and the face box in white where known; its title gives the fold, the
person and photo, the given and the predicted class (mask/gender/age) and the model's probability for the latter.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.atomic import atomic_path
from tasks.labels import AGE_NAMES, GENDER_NAMES, MASK_NAMES, split_class

TILE_INCHES = 1.6  # wide enough for the longest caption line at 6.5 pt: '✗ pred incorrect m 30-59 0.34'


def short_class(label: int) -> str:
    """'not_worn f >=60': the three attributes, short enough for a tile's title."""
    m, g, a = (int(v) for v in split_class(label))
    return f"{MASK_NAMES[m]} {GENDER_NAMES[g][0]} {AGE_NAMES[a]}"


def tile_name(image_key: str) -> str:
    """'000283 mask3': the person's id (the folder name's first field) and the photo."""
    folder, _, stem = image_key.rpartition("/")
    return f"{folder.split('_')[0]} {stem}" if folder else stem


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(image.astype(np.float32) / 255, cam, use_rgb=True, image_weight=0.55)


def contact_sheet(path: Path, title: str, tiles: pd.DataFrame, images: np.ndarray, cams: np.ndarray,
                  boxes: np.ndarray, row_of: str, columns: int) -> Path:
    return _save(sheet_figure(title, tiles, images, cams, boxes, row_of, columns), path)


def sheet_figure(title: str, tiles: pd.DataFrame, images: np.ndarray, cams: np.ndarray,
                 boxes: np.ndarray, row_of: str | None, columns: int):
    """One row per distinct `row_of` value (e.g. the person, the fold), at most `columns` tiles
    each, or (row_of None) rows of `columns` tiles; tiles' rows index `images`, `cams`, `boxes`."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if row_of is None:  # a flat grid: each tile's title says all there is
        groups = [tiles.iloc[i:i + columns] for i in range(0, len(tiles), columns)]
    else:
        groups = [g.head(columns) for _, g in tiles.groupby(row_of, sort=False)]
    rows = max(len(groups), 1)
    height, width = images.shape[1:3] if len(images) else (4, 3)
    tile_h = TILE_INCHES * height / width + 0.45
    fig = Figure(figsize=(TILE_INCHES * columns + 1.2, tile_h * rows + 0.5))
    axes = np.atleast_2d(fig.subplots(rows, columns, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    for r, group in enumerate(groups):
        for c, (i, tile) in enumerate(zip(group.index, group.itertuples())):
            ax = axes[r, c]
            ax.imshow(overlay(images[i], cams[i]))
            if np.isfinite(boxes[i]).all():
                x0, y0, x1, y1 = boxes[i] * [width, height, width, height]
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="white", lw=1.2))
            mark = "" if tile.pred == tile.target else "✗ "
            ax.set_title(f"{tile_name(tile.image_key)} · fold {tile.fold}\ngiven {short_class(tile.target)}\n"
                         f"{mark}pred {short_class(tile.pred)} {tile.confidence:.2f}", fontsize=6.5, loc="left")
        if row_of is not None:
            axes[r, 0].text(-0.08, 0.5, str(group[row_of].iloc[0]), transform=axes[r, 0].transAxes, rotation=90,
                            ha="right", va="center", fontsize=7)
    if not groups:
        axes[0, 0].text(0.5, 0.5, "nothing to show", ha="center", va="center")
    fig.suptitle(title, fontsize=9, x=0.01, ha="left")
    fig.tight_layout(rect=(0.02, 0, 1, 0.98))
    return fig


def focus_figure(path: Path, focus: pd.DataFrame) -> Path:
    """Per model, face focus of each fold (dots) and the box's share of the image (dash): a
    CAM spread evenly would score the dash, one inside the face box 1."""
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(focus["model"]))
    fig = Figure(figsize=(2.4 + 1.2 * len(models), 3.6))
    ax = fig.subplots()
    for x, model in enumerate(models):
        rows = focus[focus["model"] == model]
        ax.scatter(np.full(len(rows), x) + np.linspace(-0.12, 0.12, len(rows)), rows["face_focus"], color="#1c7ed6",
                   zorder=3, label="face focus, one dot per fold" if x == 0 else None)
        ax.hlines(rows["box_share"].mean(), x - 0.3, x + 0.3, colors="#d9480f", linestyles="--",
                  label="box share of the image (uniform CAM)" if x == 0 else None)
    ax.set_xticks(range(len(models)), models, rotation=15 if len(models) > 3 else 0)
    ax.set_ylim(0, 1)
    ax.set_xlim(-0.6, len(models) - 0.4)
    ax.set_ylabel("share of CAM mass in the face box")
    ax.set_title("Face focus: how much of each model's Grad-CAM falls in the face box", fontsize=9, loc="left")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(fontsize=7, loc="lower center", ncols=1, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))  # room below the axes for the legend
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path
