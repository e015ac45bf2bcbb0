"""`python -m orchestrator.report`: results/<experiment>/report.html, one self-contained page.

Plots are PNGs embedded as base64, so the page can be mailed or attached as it is. The
confusion matrices and per-class F1 use the chosen blend's nested OOF predictions (each
row predicted by the blend fitted without its fold), the honest ones.
"""
from __future__ import annotations

import argparse
import sys

from orchestrator.cli import add_results_args, make_parser, run_main


def run(args: argparse.Namespace) -> None:
    from orchestrator.analysis.report import read_blend_outputs, write_report
    from orchestrator.analysis.experiment import find_experiment, load_experiment
    from orchestrator.analysis.results import OofLogits, load_oof

    exp_dir = find_experiment(args.results)
    spec = load_experiment(exp_dir, args.overrides)
    oof = load_oof(exp_dir / "oof.parquet", spec.folds.n_splits, [m.name for m in spec.models],
                   exp_dir / "folds.parquet")
    weighted = set(read_blend_outputs(exp_dir).weights["weights"])
    keep = [i for i, m in enumerate(oof.models) if m in weighted]  # the models the blend saw
    oof = OofLogits(tuple(oof.models[i] for i in keep), oof.logits[keep], oof.image_key, oof.person,
                    oof.fold, oof.target, oof.rows_hash, oof.excluded)
    print(f"wrote {write_report(exp_dir, oof, spec.data.root)}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = make_parser("python -m orchestrator.report", __doc__, [
        "python -m orchestrator.report", "python -m orchestrator.report --results results/five_fold"], [
        "results/<name>/report.html (one offline page; needs blend/ first)"])
    add_results_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
