"""The one place that turns YAML, JSON and filesystem errors into UserErrors.

What a user hands a command (a spec file, a `--set` value, a results or output folder) and the
results files they may have edited or damaged are read and checked through here. A failure is
then one `InputError` naming the file, what is wrong with it and what to do, printed as one
line with exit 2, never a traceback; errors anywhere else stay bugs and keep theirs.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from tasks.errors import UserError


class InputError(UserError, ValueError):
    """A file, folder or value the user gave (or a results file) that cannot be read or used.
    A ValueError too, so the callers that already turn ValueErrors into their own messages
    (spec loading names the spec file) keep doing so."""


OS_PROBLEMS = {errno.ENOENT: "does not exist", errno.EISDIR: "is a folder, not a file",
               errno.ENOTDIR: "cannot be reached: part of its path is a file, not a folder",
               errno.EEXIST: "is in the way: a file of that name exists", errno.EACCES: "is not accessible to you "
               "(permission denied)", errno.EPERM: "is not accessible to you (operation not permitted)",
               errno.EROFS: "is on a read-only file system", errno.ENOSPC: "cannot be written: the disk is full"}


def os_problem(err: OSError) -> str:
    """What an OSError means for the file, in words."""
    return OS_PROBLEMS.get(err.errno) or (err.strerror or type(err).__name__).lower()


def yaml_problem(err: yaml.YAMLError) -> str:
    """What is wrong with some YAML text, as a predicate ("is not valid YAML (line 1, ...)")."""
    if isinstance(err, yaml.constructor.ConstructorError):
        # safe_load refuses every tag it does not know (e.g. !!python/object/apply), and runs nothing
        found = re.search(r"tag '([^']*)'", str(err.problem))
        tag = found.group(1).replace("tag:yaml.org,2002:", "!!") if found else "a tag"
        return f"carries the YAML tag {tag}, which is never read: give plain values, lists and mappings"
    mark = getattr(err, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"is not valid YAML{where}: {getattr(err, 'problem', None) or err}"


@contextlib.contextmanager
def user_input(path: str | os.PathLike, what: str, fix: str) -> Iterator[None]:
    """Inside the block, failing to read, parse or make `path` (`what` it is, e.g. "the
    experiment file") is an InputError: "<path>: <what> <problem>; <fix>"."""
    try:
        yield
    except OSError as err:
        raise InputError(f"{path}: {what} {os_problem(err)}; {fix}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: {what} is not UTF-8 text; {fix}") from None
    except yaml.YAMLError as err:
        raise InputError(f"{path}: {what} {yaml_problem(err)}; {fix}") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: {what} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                         f"{fix}") from None


def read_yaml(path: str | os.PathLike, what: str, fix: str) -> object:
    """The file's YAML (safe_load: plain values only), or an InputError."""
    with user_input(path, what, fix):
        return yaml.safe_load(Path(path).read_text())


def read_json(path: str | os.PathLike, what: str, fix: str) -> object:
    """The file's JSON, or an InputError."""
    with user_input(path, what, fix):
        return json.loads(Path(path).read_text())


def yaml_value(text: str) -> object:
    """One `--set` value parsed as YAML (`5` an int, `[1, 2]` a list), or an InputError."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InputError(f"the value {text!r} {yaml_problem(err)} (quote it to give it as text)") from None


def check_folder(path: str | os.PathLike, what: str, fix: str) -> None:
    """InputError unless `path` is a folder, or can be made one: nothing but folders in its
    place and above it. Checked before any work whose results would go there."""
    path = Path(path)
    for at in (path, *path.parents):
        if at.is_dir():
            return
        if at.exists() or at.is_symlink():  # a file, or a link to nothing
            kind = "a broken link" if not at.exists() else "a file"
            problem = f"is {kind}, not a folder" if at == path else f"cannot be made: {at} is {kind}"
            raise InputError(f"{path}: {what} {problem}; {fix}")
