"""`python -m orchestrator.export --out DIR`: the chosen ensemble as a folder of its own.

Each fold model of every model the blend weighs becomes one ONNX graph (opset 18, runs on
onnxruntime's CPU and CUDA providers; uint8 photos in, logits out, the normalisation inside),
checked against torch on random images. `blend.json` holds what is applied around them (decode,
face crop, eval pipeline, TTA, the fold mean, the fitted blend) and README.md how to call it:
`python -m orchestrator.predict PHOTOS --exported DIR` runs it without torch.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from orchestrator.cli import make_parser, run_main


def run(args: argparse.Namespace) -> None:
    from orchestrator.analysis.predictions.ensemble import load_ensemble
    from orchestrator.analysis.predictions.exported import write_exported
    from tasks.log import to_stderr
    from tasks.serving.onnx_export import export_member
    from tasks.user_files import check_folder

    started = time.monotonic()
    check_folder(args.out, "the export's folder", "move that file away, or give another --out DIR")
    ensemble = load_ensemble(args.results, log=to_stderr)
    to_stderr(f"exporting {ensemble.method} of {', '.join(ensemble.weighted())}: {len(ensemble.members)} fold models "
              f"-> {args.out}")
    out = write_exported(ensemble, args.out, export_member, to_stderr)
    to_stderr(f"wrote {out}/ (blend.json, README.md, models/*.onnx) in {time.monotonic() - started:.1f}s; "
              f"run it with: python -m orchestrator.predict PHOTOS --exported {out}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = make_parser("python -m orchestrator.export", __doc__, [
        "python -m orchestrator.export --out exported/demo                 # the experiment blended last",
        "python -m orchestrator.export --results results/five_fold --out exported/five_fold"], [
        "DIR/models/<experiment>__<job>.onnx: one graph per fold model",
        "DIR/blend.json: decodings, each member's input (eval pipeline, input size, TTA), the fitted blend",
        "DIR/README.md: how to call it"])
    parser.add_argument("--results", type=Path, help="results/<experiment> or a `blend --out` folder (default: the "
                                                     "experiment blended last)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="the folder to write (replaced whole once complete)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
