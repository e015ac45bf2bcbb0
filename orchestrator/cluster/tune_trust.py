"""The trust boundary of resuming a search: Tune's saved state is unpickled.

`Tuner.restore` unpickles `tuner.pkl` and the searcher's and trials' state in the search's
folder, so whoever could write there could run code as you: a results folder copied from
someone else, or one that others can write to. As ssh does with its keys, a search resumes
only from a folder whose every file and folder is yours and writable by no one else (group
write is allowed for a group of you alone: the user-private groups that umask 002 is meant
for). Remote storage (s3://, gs://) is left to its own access control.
"""
from __future__ import annotations

import functools
import grp
import os
import pwd
import stat
from pathlib import Path
from urllib.parse import urlparse

from tasks.errors import UserError


class UntrustedState(UserError):
    """Tune state that someone other than you could have written."""


def check_trusted(path: str) -> None:
    """Return if the search state at `path` (a folder or URI) may be restored; else UntrustedState
    naming the first file that someone else owns or may write. Nothing there: nothing to trust."""
    folder = local_folder(path)
    if folder is None or not folder.exists():
        return
    for entry in _tree(folder):
        problem = untrusted(entry)
        if problem:
            me = pwd.getpwuid(os.getuid()).pw_name
            raise UntrustedState(
                f"{folder}: will not resume this search: {entry} {problem}, and resuming unpickles Tune's state "
                f"there, which runs any code planted in it. If you trust it, make it yours (chown -R {me} {folder}; "
                f"chmod -R go-w {folder}); otherwise search afresh under another name (--set name=<new name>)")


def local_folder(path: str) -> Path | None:
    """The local folder of a storage path or file:// URI; None for remote storage."""
    parsed = urlparse(path)
    if parsed.scheme == "file":
        return Path(parsed.path)
    return None if len(parsed.scheme) > 1 else Path(path)  # one letter: a Windows drive, not a scheme


def _tree(folder: Path):
    yield folder
    for root, dirs, files in os.walk(folder):  # links are checked where they point, never descended
        for name in sorted(dirs) + sorted(files):
            yield Path(root) / name


def untrusted(path: Path) -> str | None:
    """Why someone else could have written `path` (followed, as restore would read it), or None."""
    try:
        st = path.stat()
    except FileNotFoundError:  # a dangling link: nothing is read through it
        return None
    mode = f"mode {stat.S_IMODE(st.st_mode):04o}"
    if st.st_uid != os.getuid():
        return f"is owned by {_user(st.st_uid)}, not you"
    if st.st_mode & stat.S_IWOTH:
        return f"is writable by every user ({mode})"
    if st.st_mode & stat.S_IWGRP and not private_group(st.st_gid):
        return f"is writable by the group {_group(st.st_gid)}, not a group of you alone ({mode})"
    return None


@functools.cache
def private_group(gid: int) -> bool:
    """A group whose only possible member is you: no other listed member, and no other account's
    primary group (Debian's ssh accepts group-writable keys on the same terms)."""
    me = pwd.getpwuid(os.getuid())
    try:
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return False
    others = {p.pw_name for p in pwd.getpwall() if p.pw_gid == gid and p.pw_uid != me.pw_uid}
    return members <= {me.pw_name} and not others and (gid == me.pw_gid or me.pw_name in members)


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
