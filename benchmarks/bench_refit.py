"""Refit on every person (`refit:`, tasks/spec/refit.py) against the fold models alone, on
draws whose answers are known: each draw's fold jobs are reused (cached), one refit model per
model is trained for the folds' median best epoch, and the draw is blended three times with the
same fitted blend (the fit uses OOF rows only, which refit does not change): without refit,
refit averaged with each model's fold mean, and refit replacing it. Each submission is scored
against the eval answers. Not a test: it trains one job per model per draw.

    python -m benchmarks.bench_refit --draws est_s0_p150 est_s1_p150 [--root results/bench_estimate]

The draws are bench_estimate's results folders (`--root`); their own blend/ is left as it was.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd

from benchmarks.bench_specialists import over_draws
from orchestrator import blend
from orchestrator.cluster.experiment_run import run_experiment
from tasks.job_io import JobResult
from tasks.spec.load import load_spec
from tasks.spec.refit import REFIT_FOLD

VARIANTS = {"folds alone": "refit.models=[]", "refit averaged": "refit.combine=average",
            "refit replaces": "refit.combine=replace"}


def refit_draw(root: Path, draw: str) -> list[dict]:
    """Train the draw's refit models, then one blend per variant; a row per variant."""
    spec = load_spec(root / draw / "spec.yaml", ["refit={}"])
    started = time.monotonic()
    run_experiment(spec)
    results = [JobResult.read(p.parent) for p in sorted((spec.out_dir / "jobs").glob("*/result.json"))]
    refits = [r for r in results if r.fold == REFIT_FOLD]
    folds = [r for r in results if r.fold != REFIT_FOLD and r.model in {f.model for f in refits}]
    truth = spec.data.root / "truth" / "eval_answers.csv"
    rows = []
    for variant, override in VARIANTS.items():
        out = root / f"refit_{draw}_{variant.split()[-1]}"
        if blend.main(["--results", str(spec.out_dir), "--truth", str(truth), "--set", override, "--out", str(out)]):
            raise SystemExit(f"blend of {spec.out_dir} ({variant}) failed")
        w = json.loads((out / "blend" / "weights.json").read_text())
        rows.append({"draw": draw, "variant": variant, "chosen": w["method"], "eval_macro_f1": w["truth"]["macro_f1"],
                     "nested": w["nested"]["macro_f1"],
                     "refit_epochs": " ".join(f"{r.model}:{r.epochs_run}" for r in refits),
                     "refit_s_per_job": sum(r.seconds for r in refits) / max(len(refits), 1),
                     "fold_s_per_job": sum(r.seconds for r in folds) / max(len(folds), 1),
                     "wall_s": time.monotonic() - started})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", nargs="+", required=True, help="results folders under --root")
    parser.add_argument("--root", type=Path, default=Path("results/bench_estimate"))
    parser.add_argument("--out", default="refit.csv", help="table file under --root")
    args = parser.parse_args()
    rows = []
    for draw in args.draws:
        rows += refit_draw(args.root, draw)
        table = pd.DataFrame(rows)
        table.to_csv(args.root / args.out, index=False)
    wide = table.pivot(index="draw", columns="variant", values="eval_macro_f1")
    for variant in ("refit averaged", "refit replaces"):
        wide[f"{variant} - folds"] = wide[variant] - wide["folds alone"]
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(wide.to_string(float_format=lambda v: f"{v:.4f}"))
    print(wide.filter(like=" - ").describe().loc[["mean", "min", "max"]].to_string(float_format=lambda v: f"{v:+.4f}"))
    for column in wide.filter(like=" - "):
        print(f"{column}: mean [95% t interval over {len(wide)} draws] {over_draws(wide[column])}")
    print(table.groupby("draw")[["refit_s_per_job", "fold_s_per_job"]].first().assign(
        ratio=lambda t: t.refit_s_per_job / t.fold_s_per_job).to_string(float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
