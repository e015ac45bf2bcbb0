"""`python -m orchestrator.predict PHOTOS...`: the chosen ensemble's answers for any photos.

Each photo goes exactly the way the experiment's eval photos went: decoded at the cache size,
cropped to the face with the experiment's settings when it used `data.face` (detector, margin,
fallback, background; a `boxes:` file names the competition's photos, so it is not used), each
fold model's eval pipeline and TTA, every fold model of every model the blend weighs, and the
blend as fitted (weights, temperatures, offsets, per-attribute decoding). The eval photos
themselves get the answers of blend/submission.csv.

PHOTOS are photo files, folders (searched recursively for .jpg/.jpeg/.png; names starting with
"." skipped) or text files with one photo path a line. Photos that cannot be read are listed and
left out (exit status 1); the rest are predicted.

Local by default: torch on this machine's GPU, else its CPU, batched as the eval loader batches.
`--address` runs one Ray task per fold model on the cluster's slots instead. `--exported DIR`
runs an exported ensemble (`python -m orchestrator.export`) on onnxruntime alone.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from orchestrator.cli import UserError, make_parser, run_main


def run(args: argparse.Namespace) -> int:
    from orchestrator.analysis.predictions.flow import predict_photos
    from tasks.log import to_stderr
    from tasks.serving.photos import collect_photos

    started = time.monotonic()
    if args.out.is_dir():
        raise UserError(f"--out {args.out}: a folder; give the CSV's file name, e.g. --out {args.out / 'predictions.csv'}")
    photos = collect_photos(args.photos)  # first: a wrong path should not wait for the models
    if args.exported:
        from orchestrator.analysis.predictions.exported import read_exported
        from tasks.serving.onnx_runner import onnx_logits

        ensemble, runner, where = read_exported(args.exported), onnx_logits, "onnxruntime"
    else:
        from orchestrator.analysis.predictions.ensemble import load_ensemble

        ensemble = load_ensemble(args.results, log=to_stderr)
        if args.address:
            from orchestrator.cluster.fold_tasks import ray_runner

            runner = ray_runner(None if args.address == "local" else args.address)
            where = "Ray " + ("(embedded, local)" if args.address == "local" else args.address)
        else:
            from tasks.serving.local import torch_logits

            runner, where = torch_logits, "torch, this machine"
    n = len(photos.paths)
    to_stderr(f"{n} photo{'' if n == 1 else 's'}; {ensemble.method} of {', '.join(ensemble.weighted())}: "
              f"{len(ensemble.members)} fold models on {where}")
    summary = predict_photos(ensemble, photos, runner, args.out, args.probs, to_stderr, started)
    to_stderr("\n".join(summary.lines(ensemble.method, ensemble.folder)))
    return 1 if summary.skipped else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = make_parser("python -m orchestrator.predict", __doc__, [
        "python -m orchestrator.predict photos/                       # the experiment blended last",
        "python -m orchestrator.predict a.jpg b.png list.txt --results results/five_fold --probs",
        "python -m orchestrator.predict data/synth/eval/images --results results/demo --out demo_eval.csv",
        "python -m orchestrator.predict photos/ --address auto          # one Ray task per fold model",
        "python -m orchestrator.predict photos/ --exported exported/demo  # onnxruntime alone"], [
        "FILE (--out, default predictions.csv): path, class (0..17), mask, gender, age, prob (the class's "
        "probability), face_source and face_x0,face_y0,face_x1,face_y1 (the face box the crop grew from, in the "
        "photo's pixels; empty without data.face); with --probs also prob_0..prob_17"])
    parser.add_argument("photos", nargs="+", metavar="PHOTOS",
                        help="photo files, folders (recursive) or text files listing photo paths")
    parser.add_argument("--results", type=Path, help="results/<experiment> or a `blend --out` folder (default: the "
                                                     "experiment blended last)")
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), metavar="FILE", help="the CSV to write")
    parser.add_argument("--probs", action="store_true", help="add the 18 class probabilities (prob_0..prob_17)")
    parser.add_argument("--address", help="run on Ray: a cluster's address ('auto' on its head node), or 'local' "
                                          "for an embedded local Ray")
    parser.add_argument("--exported", type=Path, metavar="DIR",
                        help="an exported ensemble (python -m orchestrator.export): onnxruntime alone, no torch")
    args = parser.parse_args(argv)
    if args.exported and (args.results or args.address):
        parser.error("--exported runs the exported folder on this machine: it takes neither --results nor --address")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
