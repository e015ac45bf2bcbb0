"""Does an attribute specialist pay? The chosen blend with and without an age-only model.

Each draw is a synthetic dataset of its own (`tasks.synth --seed S`: 150 training and 100 eval
people at 48x64, with eval answers), run with experiments/demo.yaml's three models plus an age
specialist (`{backbone: test_convnext, name: age_only, train: {target: age}}`), seeds = S. The
same jobs are blended twice in-process with the demo's blend settings: once without the
specialist (exactly what the three models give: the methods of today), once with it (the
per-attribute methods added). Both choices are scored by their nested OOF estimate and against
the eval answers; the differences are paired (the same people, the same three models' jobs).
Not a test: it trains 12 jobs per draw (about 2-3 minutes each on 2 idle cores).

    python -m benchmarks.bench_specialists --seeds 0 1 2 [--persons 150] [--specialist "{...}"]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from orchestrator.analysis.ensembles.fitting import fit_blend
from orchestrator.analysis.ensembles.uncertainty import PersonBootstrap
from orchestrator.analysis.results import load_blend_inputs
from orchestrator.analysis.results_folder import read_eval_ids, read_truth
from orchestrator.cluster.experiment_run import run_experiment
from tasks.job_io import JobResult, unfinished_reason
from tasks.log import silent
from tasks.metrics import score, score_target
from tasks.spec.load import load_spec
from tasks.synth.write import write_synth

DEMO_SPEC = Path("experiments/demo.yaml")
AGE_ONLY = "{backbone: test_convnext, name: age_only, train: {target: age}}"


def draw_spec(seed: int, persons: int, root: Path, specialist: str):
    data = root / f"data_s{seed}_p{persons}"
    if not (data / "train").exists():
        write_synth(data, persons=persons, seed=seed, size=(48, 64))
    overrides = [f"data.root={data}", f"seed={seed}", f"folds.seed={seed}", f"results_dir={root}",
                 f"name=spec_s{seed}_p{persons}"]
    base = load_spec(DEMO_SPEC, overrides)
    models = [json.dumps(m.model_dump(mode="json", exclude_defaults=True)) for m in base.models]
    return load_spec(DEMO_SPEC, [*overrides, f"models=[{', '.join([*models, specialist])}]"]), data


def chosen_scores(inputs, spec, truth: np.ndarray) -> tuple[dict, object]:
    started = time.perf_counter()
    result = fit_blend(inputs, spec.blend, log=silent)
    seconds = time.perf_counter() - started
    chosen = result.chosen
    real = score(truth, chosen.test_labels)
    interval = chosen.nested.macro_f1_interval
    return ({"method": chosen.fitted.recipe.name, "nested": interval.estimate, "nested_low": interval.low,
             "nested_high": interval.high, "nested_age_f1": chosen.nested.scores.age_f1, "eval": real.macro_f1,
             "eval_age_f1": real.age_f1, "blend_seconds": seconds}, chosen)


def job_seconds(spec) -> dict[str, float]:
    """Training seconds per model, summed over its fold jobs (result.json)."""
    out: dict[str, float] = {}
    for job in (spec.out_dir / "jobs").iterdir():
        if not unfinished_reason(job):
            r = JobResult.read(job)
            out[r.model] = out.get(r.model, 0.0) + r.seconds
    return out


def measure_draw(seed: int, persons: int, root: Path, specialist: str) -> dict:
    spec, data = draw_spec(seed, persons, root, specialist)
    started = time.perf_counter()
    summary = run_experiment(spec)
    if summary.failed or summary.unfinished:
        raise SystemExit(f"{spec.name}: jobs failed or unfinished")
    trained = time.perf_counter() - started
    inputs = load_blend_inputs(spec.out_dir, spec, log=silent)
    truth = read_truth(data / "truth" / "eval_answers.csv", read_eval_ids(spec.data.root))
    without, plain = chosen_scores(dataclasses.replace(inputs, specialists=None), spec, truth)
    with_, special = chosen_scores(inputs, spec, truth)
    boot = PersonBootstrap.draw(inputs.oof.target, inputs.oof.person)
    paired = boot.difference(special.nested.labels, plain.nested.labels)
    seconds = job_seconds(spec)
    name = inputs.specialists.models[0]
    own_target = inputs.specialists.targets[0]
    own = inputs.specialists.oof[own_target]
    return {"draw": spec.name, "run_seconds": round(trained),
            **{f"without_{k}": v for k, v in without.items()}, **{f"with_{k}": v for k, v in with_.items()},
            "nested_diff": paired.estimate, "nested_diff_low": paired.low, "nested_diff_high": paired.high,
            "eval_diff": with_["eval"] - without["eval"],
            "specialist_train_s": seconds.get(name, float("nan")),
            "others_train_s_mean": float(np.mean([s for m, s in seconds.items() if m != name])),
            # OOF F1 of its attribute alone, beside the best all-class model's F1 of that attribute
            "specialist_oof_own_f1": score_target(inputs.oof.target, own.logits[0], own_target).macro_f1,
            "best_model_oof_own_f1": max(getattr(score(inputs.oof.target, m.argmax(-1)), f"{own_target}_f1")
                                         for m in inputs.oof.logits)}


def over_draws(values: pd.Series) -> str:
    """Mean and 95% t interval over the draws."""
    mean, n = values.mean(), len(values)
    if n < 2:
        return f"{mean:+.4f}"
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return f"{mean:+.4f} [{mean - half:+.4f}, {mean + half:+.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--persons", type=int, default=150)
    parser.add_argument("--specialist", default=AGE_ONLY, help="the specialist added to demo.yaml's models")
    parser.add_argument("--root", type=Path, default=Path("results/bench_specialists"))
    args = parser.parse_args()
    rows = [measure_draw(seed, args.persons, args.root.resolve(), args.specialist) for seed in args.seeds]
    table = pd.DataFrame(rows)
    args.root.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.root / "draws.csv", index=False)
    pd.set_option("display.width", 250)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (timings are noisy when the machine is shared)")
    print(table.T.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"with minus without, over {len(table)} draws (mean [95% t interval]):")
    print(f"  nested macro F1 {over_draws(table.nested_diff)}")
    print(f"  eval macro F1   {over_draws(table.eval_diff)}")
    print(f"  specialist training: {table.specialist_train_s.mean():.0f} s per draw (the other models: "
          f"{table.others_train_s_mean.mean():.0f} s each); blend: {table.with_blend_seconds.mean():.1f} s with, "
          f"{table.without_blend_seconds.mean():.1f} s without")


if __name__ == "__main__":
    main()
