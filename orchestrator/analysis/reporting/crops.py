"""The report's contact sheet of face crops, from results/<name>/faces.parquet.

Misses first (the photos that took the fallback), then the detector's least sure boxes: the
ones to look at before trusting the crop. Each tile is the crop as the cache holds it, the
face box drawn on it (green: detector, blue: file, red: fallback).
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from orchestrator.analysis.reporting.html import data_uri, esc, section

COLOURS = {"detector": (40, 170, 60), "file": (40, 110, 220), "fallback": (220, 40, 40)}
TILE = (96, 128)  # W, H of a tile in the page


def pick_tiles(faces: pd.DataFrame, cap: int = 48) -> pd.DataFrame:
    """Fallbacks, then detections by rising score, then file boxes; at most `cap`."""
    order = {"fallback": 0, "detector": 1, "file": 2}
    ranked = faces[faces["source"].isin(list(order))].assign(
        _rank=faces["source"].map(order), _score=faces["score"].fillna(float("inf")))
    return ranked.sort_values(["_rank", "_score", "image_key"], kind="stable").head(cap)


def tile_uri(data_root: Path, row) -> str | None:
    """The crop of one photo with its face box, as a JPEG data: URI; None if the photo is gone."""
    from PIL import Image, ImageDraw

    try:
        with Image.open(data_root / row.path) as im:
            photo = im.convert("RGB")
    except (OSError, ValueError):
        return None
    x0, y0 = row.crop_x0, row.crop_y0
    crop = photo.crop((row.crop_x0, row.crop_y0, row.crop_x1, row.crop_y1))
    face = [row.x0 - x0, row.y0 - y0, row.x1 - x0 - 1, row.y1 - y0 - 1]
    ImageDraw.Draw(crop).rectangle(face, outline=COLOURS.get(row.source, (0, 0, 0)),
                                   width=max(1, crop.width // 60))
    crop.thumbnail(TILE)
    buffer = io.BytesIO()
    crop.save(buffer, format="JPEG", quality=85)
    return data_uri(buffer.getvalue(), "image/jpeg")


def faces_section(exp_dir: Path, data_root: Path | None) -> str:
    """'' when the experiment has no face crop (no faces.parquet)."""
    path = exp_dir / "faces.parquet"
    if not path.is_file():
        return ""
    faces = pd.read_parquet(path)
    counts = faces["source"].value_counts()
    ran = int((faces["detect_ms"] > 0).sum()) if "detect_ms" in faces else 0
    found = int(counts.get("detector", 0))
    rate = f"; the detector found {found} of the {ran} it looked at ({found / ran:.1%})" if ran else ""
    head = (f"<p>{len(faces)} photos: {int(counts.get('detector', 0))} detector, {int(counts.get('file', 0))} "
            f"file, {int(counts.get('fallback', 0))} fallback{rate}. "
            '<a href="faces.parquet">faces.parquet</a> has every box, '
            '<a href="face_misses.csv">face_misses.csv</a> the misses.</p>')
    why = ("What the models were trained on: each photo's crop as cached, the face box drawn in green "
           "(detector), blue (boxes file) or red (fallback: no box found). Misses first, then the "
           "detector's least sure boxes.")
    if data_root is None:
        return _section(why, head + "<p>No photos shown: the data root is not known.</p>")
    tiles = []
    for row in pick_tiles(faces).itertuples():
        uri = tile_uri(Path(data_root), row)
        score = "" if pd.isna(row.score) else f" {row.score:g}"
        label = f"{row.image_key} ({row.source}{score})"
        img = f'<img src="{uri}" alt="{esc(label)}">' if uri else "photo not found"
        tiles.append(f'<figure class="face {esc(row.source)}">{img}<figcaption>{esc(label)}</figcaption></figure>')
    return _section(why, head + f'<div class="faces">{"".join(tiles)}</div>')


def _section(why: str, body: str) -> str:
    style = ("<style>.faces{display:flex;flex-wrap:wrap;gap:6px}.faces figure{margin:0;width:100px;"
             "font-size:10px;overflow-wrap:anywhere}.faces img{display:block;margin:auto}"
             ".faces figure.fallback figcaption{color:#c22}</style>")
    return section("faces", "Face crops", why, style + body)
