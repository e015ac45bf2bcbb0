"""`python -m orchestrator.run SPEC`: every (fold, model) job of an experiment on Ray.

With no cluster address it starts an embedded local Ray sized to this machine; with
`--address auto` (or RAY_ADDRESS) it joins a running cluster. Finished jobs are never
repeated, a crashed run resumes, and the gathered tables land in results/<name>/.
"""
from __future__ import annotations

import sys

from orchestrator.cli import add_cluster_args, add_spec_args, make_parser, run_main, spec_from_args

EXAMPLES = ["python -m orchestrator.run experiments/demo.yaml --dry-run",
            "python -m orchestrator.run experiments/five_fold.yaml --address auto",
            "python -m orchestrator.run experiments/five_fold.yaml --set train.epochs=5 --set name=short",
            "python -m orchestrator.run experiments/pseudo_demo.yaml   # a second round on results/demo's pseudo labels"]
OUTPUTS = ["results/<name>/spec.yaml, manifest.json, folds.parquet (prepare)",
           "results/<name>/jobs/<model>-fold<k>-<hash>/ (weights, metrics.csv, tb/, OOF and test logits)",
           "results/<name>/logs/<job>.log, oof.parquet, test.parquet, leaderboard.csv, leaderboard.png",
           "with pseudo: results/<name>/pseudo/fold<k>.parquet (each fold's pseudo-labelled eval photos), summary.json"]


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m orchestrator.run", __doc__, EXAMPLES, OUTPUTS)
    add_spec_args(parser)
    add_cluster_args(parser, "results/<name>/ray", "the job matrix")
    parser.add_argument("--force", action="store_true",
                        help="prepare again even where it replaces the folds of finished jobs made with other "
                             "data or folds (those results then no longer blend)")
    args = parser.parse_args(argv)

    def body() -> int:
        # Said first on a terminal: torch and timm take seconds (tens on a busy machine) before
        # anything else can. A log has no screen to leave blank, and a bad spec stays one line there.
        if sys.stderr.isatty():
            print(f"{args.spec}: loading torch and timm, then the spec ...", file=sys.stderr, flush=True)
        from orchestrator.cluster.experiment_run import run_experiment

        summary = run_experiment(spec_from_args(args), args.address, args.storage, args.dry_run, force=args.force)
        if summary.unfinished:
            return 130
        return 1 if summary.failed else 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
