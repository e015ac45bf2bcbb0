"""How library code says what it is doing: a `log` callable that takes one message (a line or
several). Library functions take `log` and never choose a stream; the commands pick it
(`to_stdout`, `to_stderr`), tests collect lines in a list or pass `silent`. Only a live
display that redraws itself (the run's progress table) takes a stream instead."""
from __future__ import annotations

import sys
from collections.abc import Callable

Log = Callable[[str], None]


def to_stdout(message: str) -> None:
    print(message, file=sys.stdout, flush=True)


def to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def to_stream(stream) -> Log:
    """A log writing to `stream` (an open text file, a StringIO)."""
    return lambda message: print(message, file=stream, flush=True)


def silent(message: str) -> None:
    """A log that drops everything."""
