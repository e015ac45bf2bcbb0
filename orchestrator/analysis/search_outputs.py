"""What a search leaves in results/<name>/search/: trials.csv, best.yaml and search.png.

best.yaml is the experiment with the best trial's values set, validated like any spec and
written with only what differs from the defaults, so it reads like a hand-written one and
runs as-is with `python -m orchestrator.run`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.atomic import atomic_path, write_text
from tasks.spec.experiment import Experiment
from tasks.spec.load import sampled_spec

SCORE_NOTE = ("val_macro_f1: mean over the trial's jobs of the best epoch's validation macro F1 (no TTA); "
              "oof_macro_f1: the finished jobs' OOF macro F1 (with each model's TTA), the figure `run` reports")


@dataclass(frozen=True)
class BestTrial:
    trial: str
    values: dict
    val_macro_f1: float
    oof_macro_f1: float | None
    spec_path: Path


def best_row(trials: pd.DataFrame) -> pd.Series | None:
    """The finished trial with the best validation macro F1; without one, the best of those the
    scheduler stopped early. Never an interrupted trial: it resumes on the next run, and its
    score so far is of epochs it has not finished (None when no trial ended)."""
    scored = trials[trials["val_macro_f1"].notna()]
    finished = scored[scored["status"] == "done"]
    pool = finished if len(finished) else scored[scored["status"] == "stopped early"]
    return None if pool.empty else pool.loc[pool["val_macro_f1"].idxmax()]


def write_search_outputs(spec: Experiment, trials: pd.DataFrame, out_dir: Path) -> BestTrial | None:
    """trials.csv, best.yaml and search.png; the best trial (None, and no best.yaml, if no trial ended)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "trials.csv") as tmp:
        trials.to_csv(tmp, index=False)
    paths = list(spec.search.space)
    if len(trials):
        plot_search(trials, spec, out_dir / "search.png")
    best = best_row(trials)
    if best is None:
        return None
    values = {p: _plain(best[p]) for p in paths}
    write_text(out_dir / "best.yaml", best_yaml(spec, values, best))
    oof = best["oof_macro_f1"]
    return BestTrial(best["trial"], values, float(best["val_macro_f1"]), None if pd.isna(oof) else float(oof),
                     out_dir / "best.yaml")


def best_yaml(spec: Experiment, values: dict, best: pd.Series) -> str:
    import yaml

    chosen = sampled_spec(spec.model_dump(mode="json", exclude={"search"}), values)
    chosen = chosen.model_copy(update={"name": f"{spec.name}-best"})
    body = chosen.model_dump(mode="json", exclude_defaults=True, exclude={"search"})
    body = {"name": body.pop("name"), **body}
    header = [f"# The best of the search {spec.name!r}: trial {best['trial']}, validation macro F1 "
              f"{best['val_macro_f1']:.4f} on folds {list(spec.search.folds)} ({best['status']}).",
              "# Found values: " + ", ".join(f"{p}={v}" for p, v in values.items()),
              "# Only settings that differ from the defaults are listed. Run the full K-fold with:",
              f"#   python -m orchestrator.run {spec.out_dir / 'search' / 'best.yaml'}"]
    return "\n".join(header) + "\n" + yaml.safe_dump(body, sort_keys=False)


def _plain(value):
    """A pandas cell as the plain YAML value it was sampled as."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer() and not isinstance(value, bool):
        return value  # keep 1.0 a float: the spec field decides
    return value


def plot_search(trials: pd.DataFrame, spec: Experiment, path: Path) -> None:
    """Score against each searched value (finished and stopped trials apart), and the best
    score so far against trials in the order they finished."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    space = spec.search.space
    panels = len(space) + 1
    cols = min(panels, 3)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    scored = trials[trials["val_macro_f1"].notna()]
    for ax, (p, dist) in zip(axes.flat, space.items()):
        _value_panel(ax, scored, p, dist)
    _progress_panel(axes.flat[len(space)], scored)
    for ax in list(axes.flat)[panels:]:
        ax.set_visible(False)
    fig.suptitle(f"search {spec.name}: {len(trials)} trials, {int((trials['status'] == 'done').sum())} finished "
                 f"(validation macro F1, mean over folds {list(spec.search.folds)})", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _value_panel(ax, scored: pd.DataFrame, p: str, dist) -> None:
    if dist.kind == "choice":
        labels = [str(c) for c in dist.choice]
        x = scored[p].map(lambda v: labels.index(str(v)) if str(v) in labels else -1)
        ax.set_xticks(range(len(labels)), labels, rotation=30 if max(map(len, labels)) > 6 else 0)
    else:
        from matplotlib.ticker import NullFormatter

        x = scored[p]
        if dist.kind == "loguniform":
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # else 2x10^-3 labels pile up between decades
        ax.set_xlim(*_padded(dist.bounds, dist.kind == "loguniform"))  # where in the searched range
    done = scored["status"] == "done"
    ax.scatter(x[done], scored.loc[done, "val_macro_f1"], color="tab:blue", label="finished", zorder=3)
    ax.scatter(x[~done], scored.loc[~done, "val_macro_f1"], facecolors="none", edgecolors="tab:gray",
               label="stopped early", zorder=2)
    ax.set_xlabel(p)
    ax.set_ylabel("val macro F1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _padded(bounds, log: bool) -> tuple[float, float]:
    lo, hi = bounds
    if log:
        return lo / 1.3, hi * 1.3
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def _progress_panel(ax, scored: pd.DataFrame) -> None:
    from matplotlib.ticker import MaxNLocator

    order = scored.sort_values("finished_at", kind="stable") if "finished_at" in scored else scored
    x, done = range(1, len(order) + 1), (order["status"] == "done").to_numpy()
    ax.scatter([i for i, d in zip(x, done) if d], order["val_macro_f1"][done], color="tab:blue", label="finished")
    ax.scatter([i for i, d in zip(x, done) if not d], order["val_macro_f1"][~done], facecolors="none",
               edgecolors="tab:gray", label="stopped early")
    # The best so far among finished trials, as best.yaml picks: a stopped trial's score is of fewer epochs.
    finished = order["val_macro_f1"].where(order["status"] == "done")
    ax.step(range(1, len(order) + 1), finished.cummax().ffill().to_numpy(), where="post", color="tab:red",
            label="best finished so far")
    ax.set_xlabel("trials, in the order they ended")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("val macro F1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def format_trials(trials: pd.DataFrame, paths: list[str], top: int = 8) -> str:
    """The best trials as a table for the console, best first."""
    if trials.empty:
        return "no trials"
    shown = trials.sort_values("val_macro_f1", ascending=False, na_position="last").head(top)
    cols = ["trial", *paths, "val_macro_f1", "oof_macro_f1", "epochs", "status"]
    return shown[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")
