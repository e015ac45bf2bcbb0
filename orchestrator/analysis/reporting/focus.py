"""The report's "Where the models look": face focus and the Grad-CAM sheets from
results/<name>/explain/ (written by `python -m orchestrator.explain`); '' when there are none.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from orchestrator.analysis.reporting.html import esc, frame_table, img, section
from orchestrator.analysis.saliency.files import has_record, listed

SHEETS = (("mistakes", "Most confident mistakes"), ("suspects", "The audit's suspects, then people worth a look"),
          ("sample", "A random sample (face focus is measured on it)"))


def _img(path: Path, alt: str) -> str:
    return img(path.read_bytes(), alt)


def explain_section(exp_dir: Path) -> str:
    folder = exp_dir / "explain"
    if not folder.is_dir():
        return ""
    # what explain listed as written (a user's own files there are not sheets); before the list, every PNG
    ours = set(listed(folder)) if has_record(folder) else {p.name for p in folder.iterdir()}
    sheets = sorted(folder / n for n in ours if n.endswith(".png"))
    if not sheets:
        return ""
    why = ("Grad-CAM of each fold model on its own held-out photos, for the class it predicted: red is where the "
           "evidence for that class lies, the white frame is the face box. <b>Face focus</b>: the share of the CAM's "
           "mass inside the face box, averaged over a fold's random sample; <b>box share</b>: the box's share of the "
           "image, what a CAM spread evenly would score. Focus well above the box share: the model reads the face; "
           "near or below it: background, clothes or the frame carry its decision.")
    parts = []
    focus_path = folder / "face_focus.csv"
    if focus_path.name in ours and focus_path.is_file():
        focus = pd.read_csv(focus_path)
        mean = focus.groupby("model", sort=False)[["images", "face_focus", "box_share"]].agg(
            {"images": "sum", "face_focus": "mean", "box_share": "mean"})
        parts.append(f'<div class="focus">{_img(folder / "face_focus.png", "face focus per model and fold")}'
                     if folder / "face_focus.png" in sheets and (folder / "face_focus.png").is_file()
                     else '<div class="focus">')
        mean = mean.assign(images=mean["images"].astype(int).astype(str))  # a count, not a 4-decimal float
        names = {"images": "images", "face_focus": "face focus (fold mean)", "box_share": "box share"}
        parts.append(frame_table(mean.rename(columns=names).rename_axis("model"))
                     + '<p><a href="explain/face_focus.csv">face_focus.csv</a> has each fold.</p></div>')
    else:
        parts.append("<p>No face focus: the experiment has no faces.parquet (run without data.face); run "
                     "<code>python -m orchestrator.explain --boxes FILE</code> with a boxes file.</p>")
    models = sorted({p.stem.split("_", 1)[1] for p in sheets if "_" in p.stem and p.stem != "face_focus"})
    for model in models:
        for stem, what in SHEETS:
            path = folder / f"{stem}_{model}.png"
            if path in sheets and path.is_file():
                parts.append(f"<h3>{esc(model)}: {esc(what)}</h3>{_img(path, f'{stem} {model}')}")
    style = "<style>.focus{display:flex;gap:24px;align-items:flex-start}</style>"
    return section("explain", "Where the models look", why, style + "\n".join(parts))
