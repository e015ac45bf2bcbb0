"""`python -m orchestrator.search SPEC`: tune hyperparameters on person folds with Ray Tune.

The spec's `search:` section maps spec fields (the paths of --set) to distributions; each
trial is the experiment with sampled values, trained as ordinary jobs on `search.folds`
(Optuna's TPE, random or grid; ASHA stops weak trials early). A killed or interrupted search,
run again, resumes without repeating finished trials. The best values are written as a
complete experiment that `orchestrator.run` takes as-is.
"""
from __future__ import annotations

import sys

from orchestrator.cli import add_cluster_args, add_spec_args, make_parser, run_main, spec_from_args

EXAMPLES = ["python -m orchestrator.search experiments/search_demo.yaml",
            "python -m orchestrator.search experiments/search_demo.yaml --dry-run",
            "python -m orchestrator.search experiments/search_demo.yaml --set search.num_samples=20",
            "python -m orchestrator.run results/search_demo/search/best.yaml"]
OUTPUTS = ["results/<name>/search/trials.csv (one row per trial: values, scores, epochs, status)",
           "results/<name>/search/best.yaml (the best values in a complete, runnable experiment)",
           "results/<name>/search/search.png (score against each value; best so far)",
           "results/<name>/search/ray/ (Tune's state and the trials' Train checkpoints: resume)"]


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m orchestrator.search", __doc__, EXAMPLES, OUTPUTS)
    add_spec_args(parser)
    add_cluster_args(parser, "results/<name>/search/ray", "the search plan")
    args = parser.parse_args(argv)

    def body() -> int:
        from orchestrator.analysis.search_outputs import SCORE_NOTE, format_trials, write_search_outputs
        from orchestrator.analysis.tracking_logs import log_search
        from orchestrator.cluster.tuning import run_search, search_dir

        spec = spec_from_args(args).resolved()
        outcome = run_search(spec, args.address, args.storage, args.dry_run)
        if outcome is None:
            return 0
        out = search_dir(spec)
        best = write_search_outputs(spec, outcome.trials, out)
        log_search(spec, spec.out_dir, outcome.trials)
        counts = outcome.trials["status"].value_counts().to_dict() if len(outcome.trials) else {}
        print("\n" + format_trials(outcome.trials, list(spec.search.space)), file=sys.stderr)
        print(f"{SCORE_NOTE}\ntrials: " + ", ".join(f"{n} {s}" for s, n in counts.items())
              + f" -> {out / 'trials.csv'}, {out / 'search.png'}", file=sys.stderr)
        for row in outcome.trials[outcome.trials["status"] == "error"].itertuples() if counts else ():
            print(f"trial {row.trial} failed: {row.error}\n  full traceback: {outcome.tune_dir}/trial_{row.trial}/error.txt",
                  file=sys.stderr)
        if best is not None:
            print(f"best: trial {best.trial}, val macro F1 {best.val_macro_f1:.4f} with "
                  + ", ".join(f"{p}={v}" for p, v in best.values.items())
                  + f"\nrun it as a full K-fold:\n  python -m orchestrator.run {best.spec_path}", file=sys.stderr)
        elif len(outcome.trials):
            print("no best.yaml: no trial has finished, nor been stopped early by the scheduler (interrupted "
                  "trials resume, failed ones have no score)", file=sys.stderr)
        if outcome.interrupted:
            print("interrupted: run the same command again to resume the search", file=sys.stderr)
            return 130
        return 0 if best is not None else 1

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
