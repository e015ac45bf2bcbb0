"""What the report reads besides the blend: the run's manifest, each job's result and
per-epoch metrics, and the audit's suspects and people worth a look with thumbnails of their photos.

Every file here is optional: a results folder copied without its jobs/ or made by an older
version still gets a report, with the section saying what is missing.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from orchestrator.analysis.mislabels.suspects import pick_review, pick_suspects
from orchestrator.analysis.reporting.html import data_uri
from tasks.labels import MASK_STEMS

THUMBNAIL = (96, 128)  # (width, height): the photos are 3:4 portraits


@dataclass(frozen=True)
class Jobs:
    results: pd.DataFrame  # one row per finished job: job, model, fold, seconds, best_epoch, epochs_run
    curves: pd.DataFrame  # every job's metrics.csv rows, plus job, model and fold columns


@dataclass(frozen=True)
class Suspect:
    person: str
    attribute: str
    rank: int
    score: float
    p_wrong: float | None  # only in the newer audit.csv
    given: str
    suggested: str
    photos: tuple[tuple[str, str], ...]  # (file stem, data: URI of a JPEG thumbnail)


@dataclass(frozen=True)
class AuditView:
    suspects: tuple[Suspect, ...]
    listed: int  # suspects before the page's cap
    rule: str  # how the suspects were picked, said on the page
    photo_root: Path | None  # where the photos were looked for (None: data root unknown)
    stale: bool = False  # audit.csv older than the blend: made from other probabilities
    review: tuple[Suspect, ...] = ()  # the "worth a look" tier (tier == review), capped per attribute
    review_listed: int = 0  # people worth a look before the page's cap
    highest: tuple[tuple[str, str, float], ...] = ()  # per attribute: (attribute, person, p_wrong) of rank 1


def read_manifest(exp_dir: Path) -> dict:
    path = exp_dir / "manifest.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def read_jobs(exp_dir: Path) -> Jobs:
    """The spec's finished jobs (a readable result.json) and their per-epoch metrics."""
    from orchestrator.analysis.results_folder import finished_job_dirs

    rows, curves = [], []
    for folder in finished_job_dirs(exp_dir):
        try:
            result = json.loads((folder / "result.json").read_text())
        except (OSError, ValueError):
            continue  # unfinished or broken: the run's own summary names it
        row = {"job": folder.name, "model": result.get("model", folder.name), "fold": result.get("fold", -1),
               "seconds": result.get("seconds"), "best_epoch": result.get("best_epoch"),
               "epochs_run": result.get("epochs_run"),
               # older jobs did not record it; their result.json was written once, as the job ended
               "finished": result.get("finished") or (folder / "result.json").stat().st_mtime}
        rows.append(row)
        try:
            metrics = pd.read_csv(folder / "metrics.csv")
        except (OSError, ValueError):
            continue
        curves.append(metrics.assign(job=row["job"], model=row["model"], fold=row["fold"]))
    columns = ["job", "model", "fold", "seconds", "best_epoch", "epochs_run", "finished"]
    return Jobs(pd.DataFrame(rows, columns=columns),
                pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["model", "fold", "epoch"]))


def thumbnail_uri(path: Path, size: tuple[int, int] = THUMBNAIL) -> str | None:
    from PIL import Image  # deferred: only a report with an audit needs it

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail(size)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=80)
    except (OSError, ValueError):
        return None  # an unreadable photo is left out; the data checks report it elsewhere
    return data_uri(buffer.getvalue(), "image/jpeg")


def person_photos(data_root: Path, person: str) -> tuple[tuple[str, str], ...]:
    """Thumbnails of a person's seven photos in the usual order (hidden and stray files skipped)."""
    folder = data_root / "train" / "images" / person
    if not folder.is_dir():
        return ()
    found = {p.stem: p for p in sorted(folder.iterdir()) if not p.name.startswith(".") and p.stem in MASK_STEMS}
    uris = ((stem, thumbnail_uri(found[stem])) for stem in MASK_STEMS if stem in found)
    return tuple((stem, uri) for stem, uri in uris if uri)


def read_audit(exp_dir: Path, data_root: Path | None, per_attribute: int = 5, cap: int = 30,
               review_cap: int = 8) -> AuditView | None:
    """The audit's suspects (None without audit.csv), at most `cap` of them with photos, and
    the people worth a look, at most `review_cap` per attribute."""
    path = exp_dir / "audit.csv"
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"person": str, "given": str, "suggested": str, "tier": str})
    needed = {"person", "attribute", "rank", "score", "given", "suggested"}
    if not needed <= set(table.columns):
        return AuditView((), 0, f"{path.name} lacks columns {sorted(needed - set(table.columns))}", None)
    picked, review = pick_suspects(table, per_attribute), pick_review(table, review_cap)
    new = "suspect" in table.columns
    rule = ("people the audit marks as suspects" if new else
            f"the {per_attribute} most contradicted people per attribute (this audit.csv has no suspect column)")
    shown = picked.head(cap)
    people = pd.concat([shown.person, review.person]).astype(str).unique()
    photos = {p: person_photos(data_root, p) if data_root else () for p in people}
    weights = exp_dir / "blend" / "weights.json"
    stale = weights.is_file() and path.stat().st_mtime < weights.stat().st_mtime
    listed = int((table.get("tier", pd.Series(dtype=str)).astype(str).str.strip() == "review").sum())
    return AuditView(_rows(shown, photos), len(picked), rule, data_root, stale, _rows(review, photos), listed,
                     _highest(table))


def _rows(picked: pd.DataFrame, photos: dict) -> tuple[Suspect, ...]:
    wrong = "p_wrong" in picked.columns
    return tuple(Suspect(str(r.person), str(r.attribute), int(r.rank), float(r.score),
                         float(r.p_wrong) if wrong else None, str(r.given), str(r.suggested), photos[str(r.person)])
                 for r in picked.itertuples(index=False))


def _highest(table: pd.DataFrame) -> tuple[tuple[str, str, float], ...]:
    """Each attribute's top p_wrong (and whose), highest first: what the page says when no one is a suspect."""
    if "p_wrong" not in table.columns or not len(table):
        return ()
    p = pd.to_numeric(table.p_wrong, errors="coerce")
    top = table.assign(p_wrong=p).dropna(subset=["p_wrong"]).sort_values("p_wrong", ascending=False, kind="stable")
    top = top.drop_duplicates("attribute")
    return tuple((str(r.attribute), str(r.person), float(r.p_wrong)) for r in top.itertuples(index=False))
