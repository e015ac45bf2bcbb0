"""`python -m orchestrator.prepare SPEC`: validate, index, cache and fold the data, no training."""
from __future__ import annotations

import argparse
import sys

from orchestrator.cli import add_spec_args, run_main, spec_from_args
from tasks.prepare import prepare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.prepare", description=__doc__)
    add_spec_args(parser)
    args = parser.parse_args(argv)
    return run_main(lambda: prepare(spec_from_args(args)) and 0)


if __name__ == "__main__":
    sys.exit(main())
