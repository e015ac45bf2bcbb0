"""`python -m orchestrator.prepare SPEC`: validate, index, cache and fold the data, no training."""
from __future__ import annotations

import argparse
import sys

from orchestrator.cli import add_spec_args, run_main, spec_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.prepare", description=__doc__)
    add_spec_args(parser)
    parser.add_argument("--force", action="store_true",
                        help="replace the folds and manifest even where finished jobs were made with other "
                             "data or folds (those results then no longer blend)")
    args = parser.parse_args(argv)

    def body() -> int:
        from tasks.lock import experiment_lock
        from tasks.prepare import prepare

        spec = spec_from_args(args)
        with experiment_lock(spec.out_dir):
            prepare(spec, force=args.force)
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
