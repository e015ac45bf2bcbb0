"""Shared command-line plumbing: the spec argument, `--set` overrides, clean errors."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from tasks.dataset import DataError
from tasks.lock import ExperimentBusy
from tasks.logits import LogitsError
from tasks.spec import Experiment, SpecError, load_spec

# Expected failures: printed as their message alone, exit status 2, no traceback.
USER_ERRORS: tuple[type[Exception], ...] = (SpecError, DataError, LogitsError, ExperimentBusy)


def add_spec_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="experiment YAML, e.g. experiments/demo.yaml")
    add_set_arg(parser)


def add_set_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="a.b=value",
                        help="override a spec field (repeatable), e.g. --set data.root=/data --set name=trial2")


def add_results_args(parser: argparse.ArgumentParser) -> None:
    """The experiment to work on, and `--set`: the commands that read results/<experiment>/."""
    parser.add_argument("--results", type=Path, help="results/<experiment> (default: the most recent)")
    add_set_arg(parser)


def spec_from_args(args: argparse.Namespace) -> Experiment:
    return load_spec(args.spec, args.overrides)


def run_main(body: Callable[[], int | None], errors: tuple[type[Exception], ...] = ()) -> int:
    """Run a CLI body; user errors become one clear message and a non-zero exit."""
    try:
        return body() or 0
    except USER_ERRORS + errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished results are kept and a re-run resumes from them", file=sys.stderr)
        return 130
