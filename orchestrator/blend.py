"""`python -m orchestrator.blend`: the submission the OOF evidence supports, honestly scored.

Test logits are the ones the jobs saved; `--reinfer` first recomputes every job's OOF and test
logits from its saved fold model on Ray, both with the same TTA (`--tta hflip,five_crop`,
`--no-tta`; default: each model's own), e.g. when they are missing or the TTA should change.

Every method is fitted inside the person folds (on K-1 folds' OOF rows, scored on the
held-out fold) as well as on all rows; the method is chosen by the nested score, since
weights fitted and scored on the same rows flatter. Every macro F1 comes with its 95%
person-bootstrap interval (people resampled with all their photos), and the summary says
whether the chosen method beats the equal soft vote and the best single model by more than
chance (paired bootstrap).

Several `--results` (e.g. round 1 and its pseudo-label round 2) are blended as one pool of models,
named <experiment>/<model>, if they share the same folds, OOF rows, given labels and eval set; the
blend settings are the first experiment's; the outputs go to its folder or `--out DIR` (required
when it is the pseudo.source of another: its blend/ made that round's labels). Models of an
experiment with `pseudo.per_fold: false` are OOF optimistic (their pseudo labels came from models
that saw every fold): a WARNING says when the chosen blend weighs them. Beside a pool's chosen blend,
each round's own chosen method is fitted on its models alone in the same nested folds: the same
estimate, so that they compare.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from orchestrator.cli import add_results_args, make_parser, run_main


def run(args: argparse.Namespace) -> None:
    from orchestrator.analysis.ensembles.fitting import fit_blend
    from orchestrator.analysis.ensembles.outputs import (
        leaderboard,
        model_table,
        optimistic_warning,
        print_board,
        print_models,
        summary_lines,
        write_blend,
    )
    from orchestrator.analysis.ensembles.pooled import load_pool, sources_record
    from orchestrator.analysis.ensembles.rounds import round_estimates, round_lines
    from orchestrator.analysis.reporting.page import write_report
    from orchestrator.analysis.results_folder import read_eval_ids, read_truth
    from orchestrator.analysis.tracking_logs import log_blend
    from tasks.log import to_stdout
    from tasks.metrics import score

    started, created = time.perf_counter(), datetime.now(UTC).isoformat(timespec="seconds")
    sources, out_dir = experiments(args)
    spec = sources[0].spec  # how to blend, and the data: the first experiment's
    # First: a bad truth file should not cost a re-inference and a whole fit. Same row order
    # as the test logits: both follow eval/info.csv.
    truth = read_truth(args.truth, read_eval_ids(spec.data.root)) if args.truth else None
    if args.reinfer:
        from orchestrator.cluster.reinfer import reinfer

        reinfer(spec, sources[0].exp_dir, args.tta, args.address, log=to_stdout)
    pool = load_pool(sources, log=to_stdout)
    result = fit_blend(pool.inputs, spec.blend, log=to_stdout)
    rounds = round_estimates(pool, result, spec.blend, truth, log=to_stdout)  # pooled: each round alone
    board = leaderboard(result, truth)
    print_board(board, log=to_stdout)
    models = model_table(pool.models, result, pool.inputs.oof, pool.inputs.specialists)
    print_models(models, log=to_stdout)
    chosen = result.chosen
    nested = chosen.nested.scores
    real = score(truth, chosen.test_labels) if truth is not None else None
    # What only this command knows, for the report: when, how long, the true score, what was pooled.
    run_info = {"created": created, "seconds": round(time.perf_counter() - started, 2),
                "truth": {"file": str(args.truth), **real.as_dict()} if real is not None else None,
                "experiments": sources_record(sources, out_dir), "rounds_alone": [e.record() for e in rounds]}
    out = write_blend(out_dir, result, pool.inputs, board, run_info, models)
    log_blend(spec, out_dir, board, json.loads((out / "weights.json").read_text()))
    report = write_report(out_dir, pool.inputs.oof, spec.data.root)
    lines = summary_lines(result) + round_lines(rounds, result, real.macro_f1 if real is not None else None)
    if pool.inputs.test.refit is not None:  # where the submission's test logits come from
        lines.append(f"  test logits: {pool.inputs.test.refit.line()}"
                     + ("; the expected score is of the fold models' average without them" if chosen.expected else ""))
    print("\n".join(lines) + f"\nwrote {out}/ and {report}", flush=True)
    if real is not None:
        print(f"submission vs {args.truth}: macro F1 {real.macro_f1:.4f}, accuracy {real.accuracy:.4f} "
              f"(nested estimate {chosen.nested.macro_f1_interval.text()}, accuracy {nested.accuracy:.4f}"
              + (f"; expected {chosen.expected.text()}" if chosen.expected else "") + ")", flush=True)
    warning = optimistic_warning(models, result)
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr, flush=True)


def experiments(args: argparse.Namespace) -> tuple[tuple, Path]:
    """The experiments to blend (each with its own spec and the same --set) and the folder whose
    blend/ and report.html the outputs go to."""
    from orchestrator.analysis.ensembles.pooled import load_sources, output_folder
    from tasks.log import to_stdout

    overrides = list(args.overrides) + ([f"blend.metric={args.metric}"] if args.metric else [])
    sources = load_sources(args.results, overrides, log=to_stdout)
    out_dir = output_folder(args.out, sources)
    if len(sources) == 1 and args.results:  # without --results, load_sources named its choice
        print(f"experiment: {sources[0].exp_dir}", flush=True)
    elif len(sources) > 1:
        print(f"blending {len(sources)} experiments as one pool: {', '.join(str(s.exp_dir) for s in sources)}",
              flush=True)
    if args.out:
        print(f"outputs: {out_dir}/blend/ and {out_dir}/report.html", flush=True)
    return sources, out_dir


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = make_parser("python -m orchestrator.blend", __doc__, [
        "python -m orchestrator.blend", "python -m orchestrator.blend --results results/five_fold --metric macro_f1",
        "python -m orchestrator.blend --reinfer --tta hflip,five_crop --address auto",
        "python -m orchestrator.blend --truth data/synth/truth/eval_answers.csv",
        "python -m orchestrator.blend --results results/pseudo_demo --results results/demo   # both rounds as one pool"
        " -> results/pseudo_demo/blend/",
        "python -m orchestrator.blend --results results/demo --results results/pseudo_demo --out results/rounds"
        "   # demo, pseudo_demo's source, keeps its own blend/"], [
        "results/<name>/blend/: submission.csv, weights.json, leaderboard.csv (intervals), models.csv (each model's "
        "experiment, OOF macro F1, weight, oof_optimistic), oof_predictions.parquet",
        "results/<name>/report.html (<name>: the first --results; with --out DIR: DIR/blend/ and DIR/report.html; "
        "--out is required when the first is another blended experiment's pseudo.source)",
        "with --reinfer: every job's oof.parquet, test.parquet and result.json scores, "
        "results/<name>/oof.parquet and test.parquet"])
    add_results_args(parser, repeatable=True)
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write DIR/blend/ and DIR/report.html instead of the first --results folder's")
    parser.add_argument("--metric", choices=["macro_f1", "accuracy", "log_loss"],
                        help="what methods are fitted and chosen by (default: the spec's blend.metric)")
    parser.add_argument("--truth", type=Path, help="ImageID,ans CSV of true answers: score the submission")
    parser.add_argument("--reinfer", action="store_true",
                        help="first re-run OOF and test inference from every finished job's saved fold model "
                             "on Ray (when logits are missing or the TTA should change), then re-gather oof.parquet "
                             "and test.parquet; one experiment at a time")
    parser.add_argument("--tta", nargs="?", const="hflip", metavar="VIEWS",
                        help="with --reinfer: the TTA of every model's OOF and test logits: views as in train.tta, "
                             "comma-separated (hflip, scale, five_crop) or a YAML list ('[hflip, {scale: [0.9, 1.1]}]'); "
                             "none for no TTA; --tta alone is hflip (default: each model's train.tta or tta_flip)")
    parser.add_argument("--no-tta", dest="tta", action="store_const", const="none",
                        help="with --reinfer: no TTA (the same as --tta none)")
    parser.add_argument("--address", help="with --reinfer: Ray cluster to join ('auto' on a head node); "
                                          "default: RAY_ADDRESS, else an embedded local Ray")
    args = parser.parse_args(argv)
    if not args.reinfer and (args.tta is not None or args.address):
        parser.error("--tta/--no-tta and --address only apply with --reinfer: the saved test logits were made "
                     "with the spec's TTA setting")
    if args.tta is not None:
        from tasks.spec.techniques import parse_tta

        try:
            args.tta = parse_tta(args.tta)
        except ValueError as err:
            parser.error(str(err))
    if args.reinfer and len(args.results or []) > 1:
        parser.error("--reinfer works on one experiment: re-infer each first (blend --reinfer --results A, then "
                     "--results B), then blend them together without --reinfer")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
