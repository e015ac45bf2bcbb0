"""`python -m orchestrator.audit`: people whose given labels the OOF predictions contradict.

Per attribute, a person's evidence for a label is aggregated over their images with a
geometric mean of the per-image probabilities (a product of experts): seven fairly sure
images outweigh one confident mistake, which a minimum or a per-image vote cannot say.
Gender and age bands use all seven images; the mask check asks whether the
incorrect_mask and normal files look swapped. audit.csv is in the relabel-file format.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.cli import add_results_args, run_main


def run(args: argparse.Namespace) -> None:
    from orchestrator.analysis.audit import (AGGREGATES, ATTRIBUTES, audit_table, hypotheses, image_probs,
                                             precision_recall, rank, read_true_mislabels)
    from orchestrator.analysis.experiment import BlendError, find_experiment, load_experiment
    from orchestrator.analysis.results import load_oof
    from tasks.atomic import atomic_path

    exp_dir = find_experiment(args.results)
    print(f"experiment: {exp_dir}", flush=True)
    spec = load_experiment(exp_dir, args.overrides)
    oof = load_oof(exp_dir / "oof.parquet", spec.folds.n_splits, [m.name for m in spec.models],
                   exp_dir / "folds.parquet")
    if not oof.models:
        raise BlendError(f"{exp_dir}/oof.parquet: no model has complete OOF logits to audit with")
    h = hypotheses(oof, image_probs(oof, exp_dir / "blend" / "weights.json"))
    rankings = {how: {a: rank(h[a], how) for a in ATTRIBUTES} for how in AGGREGATES}
    table = audit_table(rankings["geo"], args.top)
    with atomic_path(exp_dir / "audit.csv") as tmp:
        table.to_csv(tmp, index=False)
    for attribute in ATTRIBUTES:
        flagged = table[table.attribute == attribute].drop_duplicates("person")
        print(f"{attribute}: {len(flagged)} of {len(h[attribute].people)} people contradicted"
              + (f", e.g. {', '.join(flagged.person.head(3))}" if len(flagged) else ""), flush=True)
    print(f"wrote {exp_dir / 'audit.csv'} (relabel format: review it, then set data.relabel to it)", flush=True)
    if args.truth_mislabels:
        report = precision_recall(rankings, read_true_mislabels(args.truth_mislabels, h))
        print(report.to_string(index=False, float_format=lambda v: f"{v:.3f}") if len(report)
              else f"{args.truth_mislabels}: no mislabels that change a class", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.audit", description=__doc__.splitlines()[0])
    add_results_args(parser)
    parser.add_argument("--top", type=int, help="at most this many people per attribute (default: all flagged)")
    parser.add_argument("--truth-mislabels", type=Path,
                        help="relabel-format CSV of the true mislabels: report precision and recall of the top k")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
