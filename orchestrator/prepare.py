"""`python -m orchestrator.prepare SPEC`: validate, index, cache and fold the data, no training."""
from __future__ import annotations

import sys

from orchestrator.cli import add_spec_args, make_parser, run_main, spec_from_args

EXAMPLES = ["python -m orchestrator.prepare experiments/five_fold.yaml --set data.root=/data/mask",
            "python -m orchestrator.prepare experiments/demo.yaml --set data.on_duplicate=keep"]
OUTPUTS = ["results/<name>/spec.yaml, manifest.json, folds.parquet, skipped_images.csv (if any)",
           "the decode-once image cache in $MASKFOLD_CACHE or ~/.cache/maskfold (or data.cache_dir)"]


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m orchestrator.prepare", __doc__, EXAMPLES, OUTPUTS)
    add_spec_args(parser)
    parser.add_argument("--force", action="store_true",
                        help="replace the folds and manifest even where finished jobs were made with other "
                             "data or folds (those results then no longer blend)")
    args = parser.parse_args(argv)

    def body() -> int:
        from tasks.data.preparation import prepare
        from tasks.lock import experiment_lock

        spec = spec_from_args(args)
        with experiment_lock(spec.out_dir):
            prepare(spec, force=args.force)
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
