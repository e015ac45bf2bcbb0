"""The processes a test started, and what they listen on: read from /proc, never beyond
this process's own descendants."""
import os
from pathlib import Path


def descendants(pid: int) -> set[int]:
    """This process's children, theirs, and so on: only processes this test started."""
    out, todo = set(), [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            todo.extend(c for c in children if c not in out)
            out.update(children)
    return out


def listening_addresses(pids: set[int]) -> dict[int, set[str]]:
    """Each process's listening TCP addresses (IPv4 and IPv6), from its socket inodes."""
    listening = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                listening[fields[9]] = fields[1].rsplit(":", 1)[0]
    out: dict[int, set[str]] = {}
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes = {link[8:-1] for link in links if link.startswith("socket:[")}
        found = {listening[i] for i in inodes if i in listening}
        if found:
            out[pid] = found
    return out


# 127.0.0.1, ::1, ::ffff:127.0.0.1 as /proc/net/tcp{,6} spell them
LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
