"""Gather finished jobs into the experiment's tables: oof.parquet, test.parquet,
leaderboard.csv and a fold x model heatmap. Every table is validated before it is written.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.cluster.plan import JobPlan
from tasks.atomic import atomic_path
from tasks.job_io import JobResult, unfinished_reason
from tasks.labels import ATTRIBUTES
from tasks.logits import REFIT_FILE, LogitsError, LogitsMeta, gathered_name, logits_table, read_logits, write_logits
from tasks.spec.load import load_spec
from tasks.spec.refit import REFIT_FOLD

# Short lines: the figure of two folds is about 660 px wide.
OPTIMISTIC_NOTE = "\nOOF optimistic: pseudo labels from models\nthat saw every fold (pseudo.per_fold: false)"


@dataclass(frozen=True)
class Gathered:
    oof_rows: int
    test_rows: int
    models: tuple[str, ...]  # models whose every fold finished
    incomplete: tuple[str, ...]  # models with a missing fold: left out of the tables


def gather(out_dir: Path, plans: list[JobPlan], train_keys: pd.Series, eval_keys: pd.Series) -> Gathered:
    """Each repeat's jobs into its own files (tasks.logits.gathered_name): a repeat is a
    complete K-fold of its own, checked as one. Refit jobs' test logits go to test_refit.parquet."""
    gather_refits(out_dir, [p for p in plans if p.fold == REFIT_FOLD], eval_keys)
    plans = [p for p in plans if p.fold != REFIT_FOLD]
    done = [p for p in plans if not unfinished_reason(p.out_dir)]
    folds_of = {m: {(p.repeat, p.fold) for p in plans if p.model == m} for m in {p.model for p in plans}}
    complete = sorted(m for m, folds in folds_of.items()
                      if folds == {(p.repeat, p.fold) for p in done if p.model == m})
    incomplete = tuple(sorted(set(folds_of) - set(complete)))
    optimistic = saved_oof_optimistic(out_dir)
    write_leaderboard(out_dir / "leaderboard.csv", [JobResult.read(p.out_dir) for p in done], optimistic)
    jobs = [p for p in done if p.model in complete]
    if not jobs:
        return Gathered(0, 0, (), incomplete)
    rows, written = [0, 0], set()
    for repeat, target in sorted({(p.repeat, p.train.target) for p in jobs}):
        # one file per target: all-class models (oof.parquet, as ever), each attribute's specialists
        these = [p for p in jobs if p.repeat == repeat and p.train.target == target]
        oof = _concat([p.out_dir / "oof.parquet" for p in these])
        test = _concat([p.out_dir / "test.parquet" for p in these])
        check_oof(oof[0], train_keys, sorted({p.model for p in these}))
        check_test(test[0], eval_keys, {(p.model, p.fold) for p in these})
        for split, part in (("oof", oof), ("test", test)):
            written.add(gathered_name(split, repeat, target))
            write_logits(out_dir / gathered_name(split, repeat, target), logits_table(*part))
        rows = [rows[0] + len(oof[0]), rows[1] + len(test[0])]
    _drop_stale_specialists(out_dir, written)
    if len(done) > 1:
        plot_heatmap(out_dir / "leaderboard.png", pd.read_csv(out_dir / "leaderboard.csv"), optimistic)
    return Gathered(rows[0], rows[1], tuple(complete), incomplete)


def gather_refits(out_dir: Path, plans: list[JobPlan], eval_keys: pd.Series) -> int:
    """The finished refit jobs' test logits (fold REFIT_FOLD) into test_refit.parquet; without any,
    an earlier file goes: its models were trained for other folds' epochs, or are no longer asked for."""
    path = out_dir / REFIT_FILE
    done = [p for p in plans if not unfinished_reason(p.out_dir)]
    if not done:
        path.unlink(missing_ok=True)
        return 0
    test = _concat([p.out_dir / "test.parquet" for p in done])
    check_test(test[0], eval_keys, {(p.model, REFIT_FOLD) for p in done})
    write_logits(path, logits_table(*test))
    return len(test[0])


def _drop_stale_specialists(out_dir: Path, written: set[str]) -> None:
    """Specialists' gathered files this gather did not write (the spec's specialists of that
    attribute failed or are gone): left, an older run's rows would be read as this one's."""
    for split in ("oof", "test"):
        for path in out_dir.glob(f"{split}_*.parquet"):
            target = path.stem.removeprefix(f"{split}_").split("_r")[0]
            if target in ATTRIBUTES and path.name not in written:
                path.unlink()


def _concat(paths: list[Path]) -> tuple[pd.DataFrame, np.ndarray, LogitsMeta]:
    parts = [read_logits(p) for p in paths]
    hashes = {meta.rows_hash for _, _, meta in parts}
    if len(hashes) > 1:
        raise LogitsError(f"job outputs come from different data or folds (spec hashes {sorted(hashes)})")
    targets = {meta.target for _, _, meta in parts}
    if len(targets) > 1:
        raise LogitsError(f"job outputs of one target hold logits of several ({sorted(targets)}): {paths[0].parent}")
    frame = pd.concat([f for f, _, _ in parts], ignore_index=True)
    return frame, np.concatenate([logits for _, logits, _ in parts]), parts[0][2]


def check_oof(oof: pd.DataFrame, train_keys: pd.Series, models: list[str]) -> None:
    """Each training image exactly once per model."""
    expected = set(train_keys)
    for model, rows in oof.groupby("model"):
        keys = rows["image_key"]
        if keys.duplicated().any() or set(keys) != expected:
            extra, missing = set(keys) - expected, expected - set(keys)
            raise LogitsError(f"OOF of {model}: {keys.duplicated().sum()} duplicated, {len(missing)} missing, "
                              f"{len(extra)} unknown images")
    if sorted(oof["model"].unique()) != sorted(models):
        raise LogitsError(f"OOF models {sorted(oof['model'].unique())} != {sorted(models)}")


def check_test(test: pd.DataFrame, eval_keys: pd.Series, fold_models: set[tuple[str, int]]) -> None:
    """Every eval image once per fold model, in info.csv's order."""
    expected = list(eval_keys)
    for (model, fold), rows in test.groupby(["model", "fold"]):
        if list(rows["image_key"]) != expected:
            raise LogitsError(f"test logits of {model} fold {fold} do not cover eval/info.csv in order")
    if set(zip(test["model"], test["fold"])) != fold_models:
        raise LogitsError("test logits are missing some fold models")


def saved_oof_optimistic(out_dir: Path) -> bool:
    """Whether the experiment's saved spec makes its OOF scores optimistic (pseudo.per_fold: false)."""
    path = out_dir / "spec.yaml"
    return path.is_file() and load_spec(path, check_data=False).oof_optimistic


def write_leaderboard(path: Path, results: list[JobResult], optimistic: bool = False) -> pd.DataFrame:
    """One row per (model, fold), then per model the mean and the sd over folds (the sample
    standard deviation, ddof=1: the one spread maskfold shows, in the console and report too).
    `optimistic`: the experiment's models trained on pseudo labels from models that saw every
    fold; every row says so in the column oof_optimistic (their validation scores flatter)."""
    # A specialist's scores are of its attribute alone: a `target` column says so (only then, so that
    # an experiment without specialists keeps its columns).
    specialists = any(r.target != "all" for r in results)
    rows = [{"model": r.model, "backbone": r.backbone, **({"target": r.target} if specialists else {}),
             "fold": fold_label(r.fold, r.repeat), "best_epoch": r.best_epoch,
             "seconds": round(r.seconds, 1), **r.val} for r in results]
    table = pd.DataFrame(rows)
    if len(table):
        metrics = ["macro_f1", "accuracy", "mask_f1", "gender_f1", "age_f1"]
        per_model = table.groupby(["model", "backbone", *(["target"] if specialists else [])])[metrics]  # fold rows
        summaries = [per_model.mean().reset_index().assign(fold="mean"),
                     per_model.std(ddof=1).reset_index().assign(fold="sd")]
        table = pd.concat([table, *summaries], ignore_index=True)
        table = table.sort_values(["model", "fold"], kind="stable").astype({"best_epoch": "Int64"})
        table["oof_optimistic"] = optimistic
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.5f")
    return table


def fold_label(fold: int, repeat: int) -> str:
    """A fold's label in leaderboard.csv: `2`, or `r1:2` for fold 2 of repeat 1."""
    return str(fold) if repeat == 0 else f"r{repeat}:{fold}"


def plot_heatmap(path: Path, leaderboard: pd.DataFrame, optimistic: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folds = leaderboard[~leaderboard["fold"].isin(["mean", "sd"])]  # every fold of every repeat
    grid = folds.pivot(index="model", columns="fold", values="macro_f1")
    grid["mean"] = grid.mean(axis=1)
    if "target" in folds.columns:  # a specialist's macro F1 is of its attribute alone
        own = folds.drop_duplicates("model").set_index("model").target
        grid.index = [m if own[m] == "all" else f"{m} ({own[m]} F1)" for m in grid.index]
    fig, ax = plt.subplots(figsize=(1.2 * grid.shape[1] + 3, 0.5 * grid.shape[0] + 1.5))
    image = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [c if c == "mean" else f"fold {c}".replace("fold r", "r").replace(":", " fold ")
                                         for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), grid.index)
    values = grid.to_numpy(dtype=float)
    middle = (np.nanmin(values) + np.nanmax(values)) / 2  # dark text on the bright half of viridis
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="black" if value > middle else "white")
    fig.colorbar(image, label="validation macro F1")
    ax.set_title("macro F1 by fold and model" + (OPTIMISTIC_NOTE if optimistic else ""),
                 color="#862e9c" if optimistic else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
