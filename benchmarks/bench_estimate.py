"""How the blend's numbers hold up on answers it never saw: the nested estimate against the
submission's eval score, and the choice rules (`blend.choose`: best = argmax of the nested
score, one_se = the simplest method within one standard error of it).

Each draw is a synthetic dataset of its own (`tasks.synth --seed S`, with eval answers), run
with experiments/demo.yaml (3 folds x 3 tiny models, seeds = S), optionally with weak models
added to the pool, then blended once per rule with --truth. Not a test: it trains 9-15 jobs
per draw (about 2 minutes each on 2 idle cores).

    python -m benchmarks.bench_estimate --seeds 0 1 2 [--persons 150] [--weak] [--repeats 2]

With --repeats R (folds.repeats) each draw also has the blend's expected score on new people
(orchestrator.analysis.ensembles.expected): its interval's coverage of the eval score and its
distance from it. Repeat 0's jobs are the same jobs as without repeats (same ids), so a draw run
before is only extended.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

from orchestrator import blend
from orchestrator.cluster.experiment_run import run_experiment
from tasks.spec.load import load_spec
from tasks.synth.write import write_synth

DEMO_SPEC = Path("experiments/demo.yaml")
# Weak models for the pool: a ResNet-18 from scratch (far too big for 150 people at 64x48) and a
# tiny ConvNeXt stopped after one epoch.
WEAK = ("{backbone: resnet18, name: resnet18_scratch}", "{backbone: test_convnext, name: convnext_1epoch, "
        "train: {epochs: 1}}")
RULES = ("best", "one_se")


def draw_spec(seed: int, persons: int, weak: bool, root: Path, repeats: int = 1, eval_persons: int | None = None):
    size = f"_p{persons}" + (f"_e{eval_persons}" if eval_persons else "")
    data = root / f"data_s{seed}{size}"
    if not (data / "train").exists():
        write_synth(data, persons=persons, seed=seed, size=(48, 64), eval_persons=eval_persons)
    overrides = [f"data.root={data}", f"seed={seed}", f"folds.seed={seed}", f"results_dir={root}",
                 f"name=est_s{seed}{size}{'_weak' if weak else ''}", f"folds.repeats={repeats}"]
    if weak:
        base = load_spec(DEMO_SPEC, overrides)
        models = [json.dumps(m.model_dump(mode="json", exclude_defaults=True)) for m in base.models]
        overrides.append(f"models=[{', '.join(models + list(WEAK))}]")
    return load_spec(DEMO_SPEC, overrides), data


def blend_with(spec, data: Path, rule: str) -> dict:
    code = blend.main(["--results", str(spec.out_dir), "--truth", str(data / "truth" / "eval_answers.csv"),
                       "--set", f"blend.choose={rule}"])
    if code:
        raise SystemExit(f"blend of {spec.out_dir} failed ({code})")
    w = json.loads((spec.out_dir / "blend" / "weights.json").read_text())
    e = w.get("expected") or {}
    low, high = e.get("interval") or (float("nan"), float("nan"))
    return {"method": w["method"], "nested": w["nested"]["macro_f1"], "eval": w["truth"]["macro_f1"],
            "expected": e.get("macro_f1", float("nan")), "expected_low": low, "expected_high": high}


def averaging_stats(exp_dir: Path, answers: Path) -> dict:
    """What averaging the K fold models does on the eval photos, per model then averaged over models:
    eval macro F1 of each fold model alone (mean over folds) and of their average, OOF macro F1,
    and a label-free measure of the fold models' disagreement (how often one fold model's class
    differs from the average's)."""
    from sklearn.metrics import f1_score

    from tasks.logits import read_logits

    frame, logits, _ = read_logits(exp_dir / "test.parquet")
    truth = pd.read_csv(answers).set_index("ImageID")["ans"]
    oof, oof_logits, _ = read_logits(exp_dir / "oof.parquet")
    rows = []
    for model, at in frame.groupby("model").indices.items():
        part = frame.iloc[at]
        keys = part.image_key.unique()
        by_fold = [logits[at][part.fold.to_numpy() == k] for k in sorted(part.fold.unique())]
        y = truth.loc[keys].to_numpy()
        mean = sum(by_fold) / len(by_fold)
        singles = [f1_score(y, f.argmax(1), average="macro") for f in by_fold]
        held = oof.model.to_numpy() == model
        rows.append({"single_eval": sum(singles) / len(singles), "avg_eval": f1_score(y, mean.argmax(1), average="macro"),
                     "oof": f1_score(oof.target[held].astype(int), oof_logits[held].argmax(1), average="macro"),
                     "flips": sum((f.argmax(1) != mean.argmax(1)).mean() for f in by_fold) / len(by_fold)})
    return pd.DataFrame(rows).mean().add_prefix("models_").to_dict()


def measure_draw(seed: int, persons: int, weak: bool, root: Path, repeats: int = 1,
                 eval_persons: int | None = None) -> dict:
    spec, data = draw_spec(seed, persons, weak, root, repeats, eval_persons)
    started = time.perf_counter()
    summary = run_experiment(spec)
    if summary.failed or summary.unfinished:
        raise SystemExit(f"{spec.name}: jobs failed or unfinished")
    trained = time.perf_counter() - started
    picks = {rule: blend_with(spec, data, rule) for rule in RULES}
    board = pd.read_csv(spec.out_dir / "blend" / "leaderboard.csv")
    gap = board.truth_macro_f1 - board.nested_macro_f1
    return {"draw": spec.name, "seconds": round(trained), "rank_corr": spearmanr(board.nested_macro_f1,
                                                                                 board.truth_macro_f1).statistic,
            "gap_mean": gap.mean(), "gap_min": gap.min(),
            "covered": ((board.nested_macro_f1_low <= board.truth_macro_f1)
                        & (board.truth_macro_f1 <= board.nested_macro_f1_high)).mean(),
            # over all methods: the expected interval's coverage and distance (NaN without repeats)
            "expected_covered": ((board.expected_macro_f1_low <= board.truth_macro_f1)
                                 & (board.truth_macro_f1 <= board.expected_macro_f1_high)).mean(),
            "expected_abs_err": (board.truth_macro_f1 - board.expected_macro_f1).abs().mean(),
            "expected_rank_corr": spearmanr(board.expected_macro_f1, board.truth_macro_f1).statistic,
            **{f"{rule}_{k}": v for rule, pick in picks.items() for k, v in pick.items()},
            **averaging_stats(spec.out_dir, data / "truth" / "eval_answers.csv")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--persons", type=int, default=150)
    parser.add_argument("--weak", action="store_true", help="also run each draw with the weak models added")
    parser.add_argument("--root", type=Path, default=Path("results/bench_estimate"))
    parser.add_argument("--repeats", type=int, default=1, help="folds.repeats of every draw")
    parser.add_argument("--eval-persons", type=int, default=None, help="eval people (default: 2/3 of --persons)")
    parser.add_argument("--out", default="draws.csv", help="table file under --root")
    args = parser.parse_args()
    rows = [measure_draw(seed, args.persons, weak, args.root.resolve(), args.repeats, args.eval_persons)
            for seed in args.seeds for weak in ((False, True) if args.weak else (False,))]
    table = pd.DataFrame(rows)
    args.root.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.root / args.out, index=False)
    pd.set_option("display.width", 200)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for rule in RULES:
        print(f"{rule}: eval macro F1 mean {table[f'{rule}_eval'].mean():.4f}, "
              f"eval minus nested mean {(table[f'{rule}_eval'] - table[f'{rule}_nested']).mean():+.4f}")
    print(f"one_se minus best, eval, per draw: {(table.one_se_eval - table.best_eval).round(4).tolist()}")
    for rule in RULES:
        if table[f"{rule}_expected"].notna().all():
            inside = (table[f"{rule}_expected_low"] <= table[f"{rule}_eval"]) & (
                table[f"{rule}_eval"] <= table[f"{rule}_expected_high"])
            print(f"{rule}: chosen method's expected interval covers its eval score on {inside.sum()} of {len(table)} "
                  f"draws; mean |expected - eval| {(table[f'{rule}_expected'] - table[f'{rule}_eval']).abs().mean():.4f}"
                  f", mean |nested - eval| {(table[f'{rule}_nested'] - table[f'{rule}_eval']).abs().mean():.4f}")


if __name__ == "__main__":
    main()
