"""The driver's tracking runs: the gathered leaderboard after a run, the blend after a fit.

Each is one new run per command (a snapshot of what that command wrote), named
<name>-leaderboard or <name>-blend, beside the experiment's job runs. Guarded like every
tracking call (tasks.tracking): a backend that fails warns once and the command goes on.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.spec.experiment import Experiment
from tasks.tracking import RunInfo, tracking_run

SCORES = ("macro_f1", "accuracy", "mask_f1", "gender_f1", "age_f1")


def _run(spec: Experiment, kind: str, exp_dir: Path) -> tuple:
    exp_dir = exp_dir.resolve()
    info = RunInfo(f"{spec.name}-{kind}", kind, {"experiment": spec.name}, exp_dir)
    return spec.tracking.resolved(spec.name, exp_dir), info


def log_leaderboard(spec: Experiment, exp_dir: Path) -> None:
    """<exp_dir>/leaderboard.csv as a table, each model's mean and sd of macro F1 over folds."""
    path = exp_dir / "leaderboard.csv"
    if not spec.tracking.enabled or not path.is_file():
        return
    board = pd.read_csv(path, dtype={"fold": str})
    folds = board[board["fold"].str.isdigit()]
    summary = {"jobs": len(folds), "models": folds["model"].nunique()}
    for row in board[board["fold"] == "mean"].itertuples():
        summary[f"{row.model}.macro_f1_mean"] = row.macro_f1
    for row in board[board["fold"] == "sd"].itertuples():
        if pd.notna(row.macro_f1):
            summary[f"{row.model}.macro_f1_sd"] = row.macro_f1
    if len(folds):
        summary["best_model_macro_f1_mean"] = folds.groupby("model")["macro_f1"].mean().max()
    with tracking_run(*_run(spec, "leaderboard", exp_dir)) as tracker:
        tracker.params({"n_splits": spec.folds.n_splits, "models": ",".join(m.name for m in spec.models)})
        tracker.table("leaderboard", board)
        tracker.summary({k: float(v) for k, v in summary.items()})


def log_blend(spec: Experiment, exp_dir: Path, board: pd.DataFrame, weights: dict) -> None:
    """The blend's nested and in-sample table (blend/leaderboard.csv) and the chosen method
    with its weights and scores (blend/weights.json)."""
    if not spec.tracking.enabled:
        return
    chosen = board[board["chosen"]].iloc[0]
    summary = {f"chosen_{c}": float(chosen[c]) for c in board.columns
               if c.startswith(("nested_", "in_sample_", "truth_")) and pd.notna(chosen[c])}
    params = {"method": weights["method"], "metric": weights["metric"], "vote": weights["vote"],
              "decode": weights["decode"], "methods_compared": len(board),
              **{f"weight.{m}": w for m, w in weights["weights"].items()},
              # a per-attribute blend's weights (attribute specialists): weight.age.<model>
              **{f"weight.{a}.{m}": w for a, per in (weights.get("attribute_weights") or {}).items()
                 for m, w in per.items()},
              **{f"temperature.{m}": t for m, t in weights["temperatures"].items()}}
    with tracking_run(*_run(spec, "blend", exp_dir)) as tracker:
        tracker.params(params)
        tracker.table("blend_leaderboard", board)
        tracker.summary(summary)


def log_search(spec: Experiment, exp_dir: Path, trials: pd.DataFrame) -> None:
    """The search's trials table (search/trials.csv), how it searched, and its best trial.
    Each trial's jobs log their own runs (named <model>-fold<k>-<trial>) from the job."""
    if not spec.tracking.enabled or trials.empty:
        return
    s = spec.search
    params = {"searcher": s.searcher, "scheduler": s.scheduler, "trials_planned": s.trials,
              "folds": ",".join(map(str, s.folds)), **{f"space.{p}": f"{d.kind} {d.bounds if d.kind != 'choice' else d.choice}"
                                                        for p, d in s.space.items()}}
    counts = trials["status"].value_counts()
    summary = {f"trials_{status.replace(' ', '_')}": float(n) for status, n in counts.items()}
    scored = trials[trials["status"] == "done"]["val_macro_f1"].dropna()
    if len(scored):
        summary["best_val_macro_f1"] = float(scored.max())
    summary["trial_epochs"] = float(trials["epochs"].sum())
    with tracking_run(*_run(spec, "search", exp_dir)) as tracker:
        tracker.params(params)
        tracker.table("trials", trials)
        tracker.summary(summary)
