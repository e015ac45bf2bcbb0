"""Shared command-line plumbing: the spec argument, `--set` overrides, clean errors.

Kept light (no torch, no Ray, no pandas at import): `--help` must answer at once.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from tasks.errors import UserError

__all__ = ["UserError", "add_cluster_args", "add_results_args", "add_set_arg", "add_spec_args", "count_arg",
           "fraction_arg", "make_parser", "run_main", "spec_from_args"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description and examples as written; an option's default shown where it has one
    worth saying (not for flags, empty lists, or help that already names its default)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: {default})"


def make_parser(prog: str, doc: str, examples: list[str], outputs: list[str]) -> argparse.ArgumentParser:
    """A command's parser: its docstring, then what it writes and examples after the options."""
    epilog = "writes:\n" + "\n".join(f"  {o}" for o in outputs) + "\n\nexamples:\n" + "\n".join(
        f"  {e}" for e in examples)
    return argparse.ArgumentParser(prog=prog, description=doc, epilog=epilog, formatter_class=HelpFormatter)


def add_spec_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="experiment YAML, e.g. experiments/demo.yaml")
    add_set_arg(parser)


def add_cluster_args(parser: argparse.ArgumentParser, storage: str, dry_run: str) -> None:
    """--address, --storage (its default folder named by `storage`) and --dry-run (`dry_run`: what it prints)."""
    parser.add_argument("--address", help="Ray cluster to join ('auto' on a cluster's head node); "
                                          "default: RAY_ADDRESS, else an embedded local Ray")
    parser.add_argument("--storage", help="checkpoint storage shared by all nodes, e.g. s3://bucket/runs "
                                          f"(default: MASKFOLD_STORAGE, else {storage})")
    parser.add_argument("--dry-run", action="store_true", help=f"print {dry_run} and stop; writes nothing")


def add_set_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="a.b=value",
                        help="override a spec field (repeatable), e.g. --set data.root=/data --set name=trial2; "
                             "validated like the YAML")


def add_results_args(parser: argparse.ArgumentParser, repeatable: bool = False) -> None:
    """The experiment to work on, and `--set`: the commands that read results/<experiment>/.
    `repeatable`: several experiments (a list; --set applies to each)."""
    if repeatable:
        parser.add_argument("--results", type=Path, action="append",
                            help="results/<experiment> (default: the most recent); repeat it to blend the "
                                 "models of several experiments as one pool")
    else:
        parser.add_argument("--results", type=Path, help="results/<experiment> (default: the most recent)")
    add_set_arg(parser)


# Option types raise ArgumentTypeError with the rule in words: for any other error argparse
# prints the function's own name ("invalid _count value: 'abc'").

def count_arg(text: str) -> int:
    """A whole number of at least 1, in ASCII digits."""
    if not re.fullmatch(r"\s*[0-9]+\s*", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def fraction_arg(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1 (exclusive), got {text!r}")
    return value


def spec_from_args(args: argparse.Namespace):
    from tasks.spec.load import load_spec

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
