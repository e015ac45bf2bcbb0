"""Round 1 against round 2 on the synthetic data and its truth: does the nested estimate stay honest?

    python -m benchmarks.bench_pseudo [--tag T] [--set KEY=VALUE ...]

Runs (or reuses: every step resumes) round 1 (experiments/demo.yaml with its blend), round 2 with
per-fold pseudo labels (experiments/pseudo_demo.yaml), round 2 with labels from the full round-1
blend (per_fold false, the usual practice), and blends each, plus each round 2 pooled with round 1;
every blend with --truth. Prints one table, side by side:

  submission macro F1 against the truth | nested estimate [95% interval] | gap = nested - truth
  | mean OOF macro F1 of the models | accuracy of the kept pseudo labels against the truth

A gap near round 1's means the estimate is as honest as before; a gap that grows positive means
the OOF rows flatter. `--set` goes to every run (e.g. --set seed=1 for another draw of every
model, with `--tag s1` so that its experiments get their own folders: demo-s1, pseudo_demo-s1, ...).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
TRUTH = ROOT / "data" / "synth" / "truth" / "eval_answers.csv"
RESULTS = ROOT / "results"


def step(*args: str) -> None:
    print("$ python -m " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", *args], cwd=ROOT, check=True)


def blend(*results: str, out: str | None = None) -> Path:
    args = ["orchestrator.blend", *(a for r in results for a in ("--results", str(RESULTS / r))), "--truth", str(TRUTH)]
    args += ["--out", str(RESULTS / out)] if out else []
    step(*args)
    return (RESULTS / out if out else RESULTS / results[0]) / "blend" / "weights.json"


def pseudo_accuracy(exp: str) -> str:
    folder = RESULTS / exp / "pseudo"
    if not folder.is_dir():
        return "-"
    truth = pd.read_csv(TRUTH).set_index("ImageID")["ans"]
    kept = [pd.read_parquet(f) for f in sorted(folder.glob("fold*.parquet"))]
    rows = pd.concat(kept)
    right = (truth.loc[rows["image_id"]].to_numpy() == rows["label"].to_numpy()).mean()
    return f"{right:.3f} ({len(rows) / len(kept):.0f}/fold)"


def mean_oof(*exps: str) -> float:
    scores = []
    for exp in exps:
        board = pd.read_csv(RESULTS / exp / "leaderboard.csv")
        scores += board[board["fold"].astype(str) == "mean"]["macro_f1"].tolist()
    return sum(scores) / len(scores)


def model_gaps(exp: str) -> pd.DataFrame:
    """Per model: macro F1 and accuracy of its pooled OOF rows and of its own submission (fold-mean
    test logits) against the truth. Nine models over three draws say more than three blends."""
    from tasks.logits import read_logits
    from tasks.metrics import score

    truth = pd.read_csv(TRUTH).set_index("ImageID")["ans"]
    oof, oof_logits, _ = read_logits(RESULTS / exp / "oof.parquet")
    test, test_logits, _ = read_logits(RESULTS / exp / "test.parquet")
    rows = []
    for model in oof.model.unique():
        at = (oof.model == model).to_numpy()
        own = score(oof.target[at].to_numpy(int), oof_logits[at].argmax(1))
        at = (test.model == model).to_numpy()
        mean = pd.DataFrame(test_logits[at]).groupby(test.image_key[at].to_numpy()).mean()
        real = score(truth.loc[mean.index].to_numpy(), mean.to_numpy().argmax(1))
        rows.append({"experiment": exp, "model": model, "oof_f1": own.macro_f1, "truth_f1": real.macro_f1,
                     "oof_accuracy": own.accuracy, "truth_accuracy": real.accuracy})
    return pd.DataFrame(rows)


def row(name: str, weights: Path, exps: tuple[str, ...]) -> dict:
    w = json.loads(weights.read_text())
    nested, truth = w["nested"], w["truth"]["macro_f1"]
    low, high = nested["macro_f1_interval"]
    return {"variant": name, "truth macro F1": truth, "nested estimate": f"{nested['macro_f1']:.4f} [{low:.3f}, {high:.3f}]",
            "gap (nested - truth)": f"{nested['macro_f1'] - truth:+.4f}", "method": w["method"],
            "mean OOF F1 of models": mean_oof(*exps), "pseudo labels right": " / ".join(pseudo_accuracy(e) for e in exps)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", default="", help="suffix of every experiment's name (another draw: --set seed=1)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    sets = [a for o in args.overrides for a in ("--set", o)]
    tag = f"-{args.tag}" if args.tag else ""
    r1, honest, full = f"demo{tag}", f"pseudo_demo{tag}", f"pseudo_demo_full{tag}"
    step("orchestrator.demo", "--set", f"name={r1}", *sets)  # round 1 with its blend: the labels' source
    for name, per_fold in ((honest, "true"), (full, "false")):
        step("orchestrator.run", "experiments/pseudo_demo.yaml", "--set", f"name={name}", "--set",
             f"pseudo.source=results/{r1}", "--set", f"pseudo.per_fold={per_fold}", *sets)
    rows = [row("round 1 blend", blend(r1), (r1,)),
            row("round 2 per fold", blend(honest), (honest,)),
            row("round 2 full-blend labels", blend(full), (full,)),
            row("rounds 1 + 2 per fold", blend(honest, r1, out=f"rounds_per_fold{tag}"), (honest, r1)),
            row("rounds 1 + 2 full-blend labels", blend(full, r1, out=f"rounds_full{tag}"), (full, r1))]
    table = pd.DataFrame(rows)
    print("\n" + table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    models = pd.concat([model_gaps(e).assign(variant=v) for e, v in ((r1, "round 1"), (honest, "round 2 per fold"),
                                                                       (full, "round 2 full-blend labels"))])
    models = models.assign(f1_gap=models.oof_f1 - models.truth_f1, accuracy_gap=models.oof_accuracy - models.truth_accuracy)
    print("\nper model, OOF against its own submission's truth (gap = OOF - truth):")
    print(models.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    models.to_csv(RESULTS / f"pseudo_rounds{tag}.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
