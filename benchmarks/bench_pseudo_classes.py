"""One global pseudo-label threshold against a threshold per class (`pseudo.per_class`), on
draws of benchmarks/bench_estimate.py (round 1: experiments/demo.yaml on `tasks.synth --seed S`,
blended), each round 2 being experiments/pseudo_demo.yaml with round 1 as its source.

Per draw and variant: the classes the kept labels reach, their accuracy against the eval
answers, and the eval macro F1 of round 2's blend alone and pooled with round 1. Not a test: 9
jobs per draw and variant (about 3 minutes each on 2 idle cores); every step resumes.

    python -m benchmarks.bench_pseudo_classes --seeds 0 1 2 [--persons 150]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.bench_estimate import draw_spec
from orchestrator import blend
from orchestrator.cluster.experiment_run import run_experiment
from tasks.spec.load import load_spec

PSEUDO_SPEC = Path("experiments/pseudo_demo.yaml")
VARIANTS = {"threshold 0.7": [], "per class, precision 0.9": ["pseudo.per_class={precision: 0.9}"]}


def truth_score(results: list[Path], answers: Path, out: Path | None = None) -> float:
    args = [a for r in results for a in ("--results", str(r))] + ["--truth", str(answers)]
    if blend.main(args + (["--out", str(out)] if out else [])):
        raise SystemExit(f"blend of {results} failed")
    return json.loads(((out or results[0]) / "blend" / "weights.json").read_text())["truth"]["macro_f1"]


def kept_labels(exp_dir: Path, answers: Path) -> dict:
    truth = pd.read_csv(answers).set_index("ImageID")["ans"]
    rows = pd.concat([pd.read_parquet(f) for f in sorted((exp_dir / "pseudo").glob("fold*.parquet"))])
    return {"kept_per_fold": len(rows) / 3, "classes": int(rows.label.nunique()),
            "right": float((truth.loc[rows.image_id].to_numpy() == rows.label.to_numpy()).mean())}


def measure(seed: int, persons: int, root: Path) -> list[dict]:
    r1, data = draw_spec(seed, persons, False, root)
    if not (r1.out_dir / "blend" / "weights.json").is_file():
        run_experiment(r1)
    answers = data / "truth" / "eval_answers.csv"
    alone = truth_score([r1.out_dir], answers)
    rows = [{"draw": seed, "variant": "round 1", "round2": np.nan, "pooled": alone}]
    for i, (variant, extra) in enumerate(VARIANTS.items()):
        spec = load_spec(PSEUDO_SPEC, [f"data.root={data}", f"seed={seed}", f"folds.seed={seed}",
                                       f"results_dir={root}", f"name=pc_s{seed}_p{persons}_v{i}",
                                       f"pseudo.source={r1.out_dir}", *extra])
        summary = run_experiment(spec)
        if summary.failed or summary.unfinished:
            raise SystemExit(f"{spec.name}: jobs failed or unfinished")
        rows.append({"draw": seed, "variant": variant, "round2": truth_score([spec.out_dir], answers),
                     "pooled": truth_score([spec.out_dir, r1.out_dir], answers, root / f"pc_pool_s{seed}_v{i}"),
                     **kept_labels(spec.out_dir, answers)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--persons", type=int, default=150)
    parser.add_argument("--root", type=Path, default=Path("results/bench_estimate"))
    args = parser.parse_args()
    table = pd.DataFrame([r for seed in args.seeds for r in measure(seed, args.persons, args.root.resolve())])
    table.to_csv(args.root / "pseudo_classes.csv", index=False)
    pd.set_option("display.width", 200)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    base = table[table.variant == "threshold 0.7"].set_index("draw")
    for variant in list(VARIANTS)[1:]:
        other = table[table.variant == variant].set_index("draw")
        for column in ("round2", "pooled"):
            gain = other[column] - base[column]
            print(f"{variant} minus threshold 0.7, {column}: mean {gain.mean():+.4f}, per draw {gain.round(4).tolist()}")


if __name__ == "__main__":
    main()
