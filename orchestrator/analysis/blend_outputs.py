"""What a fitted blend writes and prints: blend/ files, the leaderboard, the summary lines.

Every macro F1 goes out with its person-bootstrap interval (orchestrator.analysis.uncertainty):
with a handful of old-age people per class, macro F1 moves by 0.02+ by chance, so a point
value alone would claim more than the OOF rows can tell.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.analysis.blending import BlendResult, Comparison
from orchestrator.analysis.results import BlendInputs
from orchestrator.analysis.uncertainty import DESCRIPTION, LEVEL, RESAMPLES, SEED, Interval
from tasks.atomic import atomic_dir
from tasks.metrics import score

BOOTSTRAP = {"unit": "person", "resamples": RESAMPLES, "seed": SEED, "level": LEVEL, "interval": "percentile"}


def _with_interval(prefix: str, interval: Interval) -> dict:
    return {f"{prefix}_macro_f1": interval.estimate, f"{prefix}_macro_f1_low": interval.low,
            f"{prefix}_macro_f1_high": interval.high}


def leaderboard(result: BlendResult, truth: np.ndarray | None = None) -> pd.DataFrame:
    rows = []
    for i, r in enumerate(result.methods):
        ins, nest = r.in_sample.scores, r.nested.scores
        row = {"method": r.fitted.recipe.name, **_with_interval("in_sample", r.in_sample.macro_f1_interval),
               **_with_interval("nested", r.nested.macro_f1_interval),
               "in_sample_accuracy": ins.accuracy, "nested_accuracy": nest.accuracy,
               "nested_mask_f1": nest.mask_f1, "nested_gender_f1": nest.gender_f1, "nested_age_f1": nest.age_f1,
               "in_sample_log_loss": r.in_sample.log_loss, "nested_log_loss": r.nested.log_loss, "chosen": i == 0}
        if truth is not None:
            row["truth_macro_f1"] = score(truth, r.test_labels).macro_f1
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_record(c: Comparison) -> dict:
    return {"method": c.method, "difference": round(c.difference.estimate, 5), "interval": c.difference.record(),
            "clearly_better": c.clearly_better}


def weights_record(result: BlendResult, inputs: BlendInputs, experiment: str, run: dict | None = None) -> dict:
    """weights.json; `run` adds what only the command knows (when, how long, the true score)."""
    chosen = result.methods[0]
    f, models = chosen.fitted, inputs.oof.models
    groups = ("classes",) if f.recipe.decode == "joint" else ("mask", "gender", "age")
    return {"experiment": experiment, "rows_hash": inputs.oof.rows_hash, "metric": result.metric,
            "method": f.recipe.name, "vote": f.recipe.vote, "decode": f.recipe.decode,
            "weights": dict(zip(models, f.weights.round(6).tolist())),
            "temperatures": dict(zip(models, f.temperatures.round(4).tolist())),
            "offsets": {g: b.round(3).tolist() for g, b in zip(groups, f.offsets)},
            "in_sample": chosen.in_sample.record(), "nested": chosen.nested.record(),
            "versus_simpler": comparison_record(result.versus_simpler), "bootstrap": BOOTSTRAP,
            "excluded": [{"model": e.model, "reason": e.reason} for e in inputs.excluded], **(run or {})}


def write_blend(exp_dir: Path, result: BlendResult, inputs: BlendInputs, board: pd.DataFrame,
                run: dict | None = None) -> Path:
    """All outputs into a staging folder, then swapped in whole: a failed run leaves the old ones."""
    target = exp_dir / "blend"
    with atomic_dir(target) as tmp:
        chosen, oof = result.methods[0], inputs.oof
        (tmp / "weights.json").write_text(json.dumps(weights_record(result, inputs, exp_dir.name, run), indent=2))
        board.to_csv(tmp / "leaderboard.csv", index=False)
        pd.DataFrame({"ImageID": inputs.test.image_ids, "ans": chosen.test_labels}).to_csv(
            tmp / "submission.csv", index=False)
        pd.DataFrame({"image_key": oof.image_key, "person": oof.person, "fold": oof.fold, "target": oof.target,
                      "in_sample": chosen.in_sample.labels, "nested": chosen.nested.labels}).to_parquet(
            tmp / "oof_predictions.parquet", index=False)
    return target


def print_board(board: pd.DataFrame) -> None:
    """The leaderboard with each macro F1 as 'point [low, high]'."""
    shown = pd.DataFrame({"method": board.method})
    for prefix, title in (("in_sample", "in-sample macro F1"), ("nested", "nested macro F1")):
        shown[title] = [Interval(*v).text() for v in board[[f"{prefix}_macro_f1", f"{prefix}_macro_f1_low",
                                                              f"{prefix}_macro_f1_high"]].to_numpy()]
    for column in ("in_sample_accuracy", "nested_accuracy", "truth_macro_f1"):
        if column in board.columns:
            shown[column] = board[column]
    shown["chosen"] = np.where(board.chosen, "<-", "")
    print(f"macro F1 [{LEVEL:.0%} interval over {RESAMPLES} resamples of people, predictions fixed]:", flush=True)
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"), flush=True)


def summary_lines(result: BlendResult) -> list[str]:
    """The chosen method's honest score, and whether it beats a simpler one by more than chance."""
    chosen, c = result.methods[0], result.versus_simpler
    name = chosen.fitted.recipe.name
    lines = [f"chosen: {name} (nested macro F1 {chosen.nested.macro_f1_interval.text()}, "
             f"in-sample {chosen.in_sample.macro_f1_interval.text()})"]
    if c.clearly_better:
        lines.append(f"chosen {name} is better than {c.method} by {c.difference.text(signed=True)} "
                     f"in nested macro F1 ({DESCRIPTION})")
    else:
        lines.append(f"chosen {name} is not clearly better than {c.method}: nested macro F1 "
                     f"{c.difference.text(signed=True)} ({DESCRIPTION})")
    return lines
