"""What pseudo labelling leaves in results/<name>/pseudo/: each fold's set, the summary, a plot."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tasks.atomic import atomic_path, write_text
from tasks.labels import CLASS_NAMES, NUM_CLASSES
from tasks.pseudo.fold_sets import PseudoError, PseudoSet, pseudo_path, write_pseudo
from tasks.spec.experiment import Experiment


def write_sets(out_dir: Path, sets: dict[int, PseudoSet], summary: dict) -> None:
    for k, rows in sets.items():
        write_pseudo(pseudo_path(out_dir, k), rows, {"fold": k, "hash": summary["folds"][str(k)]["hash"],
                                                     "source": summary["source"], "method": summary["method"]})
    write_text(out_dir / "pseudo" / "summary.json", json.dumps(summary, indent=2))


def saved_hashes(spec: Experiment) -> dict[int, str] | None:
    """The hashes of the pseudo sets a run built (for re-inference, which must not rebuild them)."""
    if spec.pseudo is None:
        return None
    path = spec.out_dir / "pseudo" / "summary.json"
    if not path.is_file():
        raise PseudoError(f"{path}: no such file; run the experiment (python -m orchestrator.run) first")
    return {int(k): v["hash"] for k, v in json.loads(path.read_text())["folds"].items()}


def plot_pseudo(path: Path, confidence: dict[int, np.ndarray], sets: dict[int, PseudoSet], summary: dict) -> None:
    """Left: how sure round 1 is of each eval photo, per fold, against the threshold (where to set
    it). Right: the classes each fold's kept rows teach (a threshold can starve the rare ones)."""
    from matplotlib.figure import Figure


    fig = Figure(figsize=(13, 4.6))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    bins = np.linspace(0, 1, 41)
    for k, conf in confidence.items():
        left.hist(conf, bins=bins, histtype="step", linewidth=1.5, label=f"fold {k}: {len(sets[k])} kept")
    if not summary.get("per_class"):  # per class, each class has its own bar (summary.json's thresholds)
        left.axvline(summary["threshold"], color="black", linestyle="--", label=f"threshold {summary['threshold']:g}")
    left.set(xlabel="probability of the pseudo label (round 1's blend)", ylabel="eval photos",
             title="confidence of round 1 on each eval photo")
    left.legend(fontsize=8)
    width = 0.8 / len(sets)
    for i, (k, rows) in enumerate(sets.items()):
        counts = np.bincount(rows.label, minlength=NUM_CLASSES)
        right.bar(np.arange(NUM_CLASSES) + (i - (len(sets) - 1) / 2) * width, counts, width, label=f"fold {k}")
    right.set_xticks(range(NUM_CLASSES), CLASS_NAMES, rotation=60, ha="right", fontsize=7)
    right.set(ylabel="pseudo-labelled photos kept", title="kept rows per class")
    right.legend(fontsize=8)
    how = "per fold (fold k: round 1's fold-k models only)" if summary["per_fold"] else \
        "full round-1 blend for every fold: OOF optimistic"
    fig.suptitle(f"pseudo labels from {Path(summary['source']).name} ({summary['method']}), {how}", fontsize=11)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
