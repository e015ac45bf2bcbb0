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
    from orchestrator.analysis.ensembles.pooled import blended_oof, is_blend_folder
    from orchestrator.analysis.reporting.page import write_report
    from orchestrator.analysis.results_folder import PREFER_BLENDED, find_experiment
    from tasks.log import to_stdout

    # A `blend --out` folder has no experiment of its own: its weights.json names the blended ones.
    exp_dir = args.results if is_blend_folder(args.results) else find_experiment(
        args.results, prefer=PREFER_BLENDED, log=to_stdout)
    oof, spec = blended_oof(exp_dir, args.overrides)
    print(f"wrote {write_report(exp_dir, oof, spec.data.root)}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = make_parser("python -m orchestrator.report", __doc__, [
        "python -m orchestrator.report", "python -m orchestrator.report --results results/five_fold",
        "python -m orchestrator.report --results results/rounds   # a `blend --out results/rounds` folder"], [
        "results/<name>/report.html (one offline page; needs blend/ first)"])
    add_results_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
