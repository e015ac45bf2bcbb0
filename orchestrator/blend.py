"""`python -m orchestrator.blend`: the submission the OOF evidence supports, honestly scored.

Test logits are the ones the jobs saved; `--reinfer` first recomputes them from the saved fold
models on Ray (optionally with flip TTA via `--tta/--no-tta`), e.g. when they are missing.

Every method is fitted inside the person folds (on K-1 folds' OOF rows, scored on the
held-out fold) as well as on all rows; the method is chosen by the nested score, since
weights fitted and scored on the same rows flatter. Every macro F1 comes with its 95%
person-bootstrap interval (people resampled with all their photos), and the summary says
whether the chosen method beats the equal soft vote by more than chance (paired bootstrap).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from orchestrator.cli import add_results_args, make_parser, run_main


def run(args: argparse.Namespace) -> None:
    from orchestrator.analysis.blend_outputs import leaderboard, print_board, summary_lines, write_blend
    from orchestrator.analysis.blending import fit_blend
    from orchestrator.analysis.report import write_report
    from orchestrator.analysis.experiment import find_experiment, load_experiment, read_eval_ids, read_truth
    from orchestrator.analysis.results import load_blend_inputs
    from orchestrator.analysis.tracking_logs import log_blend
    from tasks.metrics import score

    started, created = time.perf_counter(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    exp_dir = find_experiment(args.results)
    print(f"experiment: {exp_dir}", flush=True)
    overrides = list(args.overrides) + ([f"blend.metric={args.metric}"] if args.metric else [])
    spec = load_experiment(exp_dir, overrides)
    # First: a bad truth file should not cost a re-inference and a whole fit. Same row order
    # as the test logits: both follow eval/info.csv.
    truth = read_truth(args.truth, read_eval_ids(spec.data.root)) if args.truth else None
    if args.reinfer:
        from orchestrator.cluster.reinfer import reinfer

        reinfer(spec, exp_dir, args.tta, args.address)
    inputs = load_blend_inputs(exp_dir, spec)
    result = fit_blend(inputs, spec.blend)
    board = leaderboard(result, truth)
    print_board(board)
    chosen = result.methods[0]
    nested = chosen.nested.scores
    real = score(truth, chosen.test_labels) if truth is not None else None
    # What only this command knows, for the report: when, how long, and the true score.
    run_info = {"created": created, "seconds": round(time.perf_counter() - started, 2),
                "truth": {"file": str(args.truth), **real.as_dict()} if real is not None else None}
    out = write_blend(exp_dir, result, inputs, board, run_info)
    log_blend(spec, exp_dir, board, json.loads((out / "weights.json").read_text()))
    report = write_report(exp_dir, inputs.oof, spec.data.root)
    print("\n".join(summary_lines(result)) + f"\nwrote {out}/ and {report}", flush=True)
    if real is not None:
        print(f"submission vs {args.truth}: macro F1 {real.macro_f1:.4f}, accuracy {real.accuracy:.4f} "
              f"(nested estimate {chosen.nested.macro_f1_interval.text()}, accuracy {nested.accuracy:.4f})",
              flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = make_parser("python -m orchestrator.blend", __doc__, [
        "python -m orchestrator.blend", "python -m orchestrator.blend --results results/five_fold --metric macro_f1",
        "python -m orchestrator.blend --reinfer --tta --address auto",
        "python -m orchestrator.blend --truth data/synth/truth/eval_answers.csv"], [
        "results/<name>/blend/: submission.csv, weights.json, leaderboard.csv (intervals), oof_predictions.parquet",
        "results/<name>/report.html", "with --reinfer: every job's test.parquet, results/<name>/test.parquet"])
    add_results_args(parser)
    parser.add_argument("--metric", choices=["macro_f1", "accuracy", "log_loss"],
                        help="what methods are fitted and chosen by (default: the spec's blend.metric)")
    parser.add_argument("--truth", type=Path, help="ImageID,ans CSV of true answers: score the submission")
    parser.add_argument("--reinfer", action="store_true",
                        help="first re-run test inference from every finished job's saved fold model on Ray "
                             "(when test logits are missing or TTA should change), then re-gather test.parquet")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="with --reinfer: flip TTA on or off for every model (default: each model's "
                             "train.tta_flip)")
    parser.add_argument("--address", help="with --reinfer: Ray cluster to join ('auto' on a head node); "
                                          "default: RAY_ADDRESS, else an embedded local Ray")
    args = parser.parse_args(argv)
    if not args.reinfer and (args.tta is not None or args.address):
        parser.error("--tta/--no-tta and --address only apply with --reinfer: the saved test logits were made "
                     "with the spec's TTA setting")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
