"""`python -m orchestrator.demo`: the whole loop on synthetic data, on this machine.

Writes a synthetic dataset in the competition's exact layout (once) to data/synth, then
runs experiments/demo.yaml on an embedded local Ray, blends the OOF logits into a
submission, audits the labels, and scores the submission against the true answers next
to the nested estimate. Re-running reuses everything that finished.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.cli import add_set_arg, make_parser, run_main
from tasks.spec.load import load_spec

DEMO_SPEC = Path("experiments/demo.yaml")


def make_data(root: Path, persons: int, seed: int) -> None:
    from tasks.synth.write import write_synth

    if (root / "train").exists():
        print(f"using the synthetic data in {root}", file=sys.stderr)
        return
    print(f"writing a synthetic dataset of {persons} people to {root} ...", file=sys.stderr)
    summary = write_synth(root, persons=persons, seed=seed, size=(48, 64))
    print(summary, file=sys.stderr)


def demo(args: argparse.Namespace) -> int:
    from orchestrator import audit, blend, report
    from orchestrator.cluster.experiment_run import run_experiment

    # Said first: the spec's check of backbone names loads timm and torch, seconds before anything else.
    print(f"demo: {DEMO_SPEC}: loading torch and timm, then the spec ...", file=sys.stderr, flush=True)
    spec = load_spec(DEMO_SPEC, args.overrides, check_data=False)
    make_data(spec.data.root, args.persons, args.seed)
    spec = load_spec(DEMO_SPEC, args.overrides)
    summary = run_experiment(spec)
    if summary.unfinished:  # Ctrl-C: the summary above says what to do
        return 130
    if summary.failed:
        print("some jobs failed (see above); blending what finished", file=sys.stderr)
    truth = spec.data.root / "truth"
    print("\n== blend ==", file=sys.stderr)
    code = blend.main(["--results", str(spec.out_dir), "--truth", str(truth / "eval_answers.csv")])
    if code:
        return code
    print("\n== label audit ==", file=sys.stderr)
    code = audit.main(["--results", str(spec.out_dir), "--truth-mislabels", str(truth / "mislabeled.csv")])
    if not code:  # blend wrote the report before the audit existed: again, with the audit's photos
        code = report.main(["--results", str(spec.out_dir)])
    print(f"\ndone: submission {spec.out_dir / 'blend' / 'submission.csv'}, report {spec.out_dir / 'report.html'}",
          file=sys.stderr)
    return code or (1 if summary.failed else 0)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m orchestrator.demo", __doc__, [
        "python -m orchestrator.demo", "python -m orchestrator.demo --persons 300 --set train.epochs=12"], [
        "data/synth/ (train/, eval/, truth/; written once)",
        "results/demo/ (jobs, logs, oof/test parquet, leaderboard), results/demo/blend/submission.csv, "
        "report.html, audit.csv"])
    parser.add_argument("--persons", type=int, default=150, help="training people to synthesise")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    add_set_arg(parser)
    args = parser.parse_args(argv)
    return run_main(lambda: demo(args))


if __name__ == "__main__":
    sys.exit(main())
