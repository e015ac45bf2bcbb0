"""`python -m orchestrator.explain`: where the fold models look (Grad-CAM on their own OOF photos).

Each photo is explained by the fold model that held it out, for the class it predicted: per
given class the most confident mistakes, the audit's suspects then people worth a look (with audit.csv), and a
seeded random sample. Face focus, per model and fold over the sample, is the share of the
CAM's mass inside the face box (from faces.parquet, or --boxes FILE for an experiment run
without data.face); a CAM spread evenly scores the box's share of the image (box_share).
Runs here by default; --ray runs one task per fold model on the slot resource, as
`blend --reinfer` does. Writes only under results/<name>/explain/ and the report.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.cli import add_results_args, count_arg, make_parser, run_main


def run(args: argparse.Namespace) -> int:
    from orchestrator.analysis.results_folder import PREFER_BLENDED, find_experiment, load_experiment
    from orchestrator.analysis.saliency.pipeline import explain, local_runner
    from tasks.lock import experiment_lock
    from tasks.log import to_stdout

    exp_dir = find_experiment(args.results, prefer=PREFER_BLENDED, log=to_stdout)
    spec = load_experiment(exp_dir, args.overrides)
    runner = local_runner
    if args.ray:
        from orchestrator.cluster.cam_tasks import ray_runner

        runner = ray_runner(args.address)
    # Held like a run's: a run beside it would replace the weights and OOF rows being explained,
    # and two explains would write explain/ and the report at once.
    with experiment_lock(exp_dir, otherwise="then run explain again"):
        summary = explain(spec, exp_dir, args.per_class, args.sample, args.boxes, runner, log=to_stdout)
        if summary.focus is not None and len(summary.focus):
            print("face focus (share of CAM mass in the face box; box_share: what an even CAM scores):\n"
                  + summary.focus.to_string(index=False, float_format=lambda v: f"{v:.3f}"), flush=True)
        if (exp_dir / "blend" / "weights.json").is_file():
            _refresh_report(exp_dir, spec, args.overrides)
    for line in summary.lost_lines(spec.folds.n_splits):  # partial sheets are written, but say so and fail
        print(f"incomplete: {line}", file=sys.stderr, flush=True)
    return 1 if summary.lost else 0


def _refresh_report(exp_dir: Path, spec, overrides: list[str]) -> None:
    """The report gains its "Where the models look" section; the blend's files are only read."""
    from orchestrator.analysis.ensembles.pooled import blended_oof
    from orchestrator.analysis.reporting.page import write_report

    oof, _ = blended_oof(exp_dir, overrides)  # the models the blend weighs, of every experiment it pooled
    print(f"wrote {write_report(exp_dir, oof, spec.data.root)}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = make_parser("python -m orchestrator.explain", __doc__, [
        "python -m orchestrator.explain", "python -m orchestrator.explain --results results/demo --per-class 3",
        "python -m orchestrator.explain --boxes data/synth/truth/face_boxes.csv",
        "python -m orchestrator.explain --ray --address auto"], [
        "results/<name>/explain/: mistakes_<model>.png, suspects_<model>.png, sample_<model>.png (CAM overlays)",
        "results/<name>/explain/face_focus.csv (model,fold,images,face_focus,box_share) and face_focus.png",
        "results/<name>/report.html (section 'Where the models look'), when the experiment is blended"])
    add_results_args(parser)
    parser.add_argument("--per-class", type=count_arg, default=2, help="most confident mistakes shown per given class")
    parser.add_argument("--sample", type=count_arg, default=32,
                        help="random OOF photos per fold model: face focus is measured over them")
    parser.add_argument("--boxes", type=Path, help="face boxes CSV image,x0,y0,x1,y1 in original photo pixels "
                                                   "(the data.face.boxes format); default: faces.parquet")
    parser.add_argument("--ray", action="store_true", help="run one Ray task per fold model on the slot resource")
    parser.add_argument("--address", help="with --ray: Ray cluster to join ('auto' on a head node); "
                                          "default: RAY_ADDRESS, else an embedded local Ray")
    args = parser.parse_args(argv)
    if args.address and not args.ray:
        parser.error("--address only applies with --ray")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
