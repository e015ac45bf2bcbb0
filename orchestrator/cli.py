"""Shared command-line plumbing: the spec argument, `--set` overrides, clean errors.

Kept light (no torch, no Ray, no pandas at import): `--help` must answer at once.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from tasks.errors import UserError

__all__ = ["UserError", "add_results_args", "add_set_arg", "add_spec_args", "run_main", "spec_from_args"]


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


def spec_from_args(args: argparse.Namespace):
    from tasks.spec import load_spec

    return load_spec(args.spec, args.overrides)


def run_main(body: Callable[[], int | None]) -> int:
    """Run a CLI body: a UserError (of any layer) is its message alone and exit status 2."""
    try:
        return body() or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished results are kept and a re-run resumes from them", file=sys.stderr)
        return 130
