"""The live view of the board on a terminal: what the run is doing, a summary line, a row per
job, the note on val F1.

Fitted to the terminal when drawn. Every column but the job's has a fixed width that holds its
longest value ("measuring", "12.3 min"), so nothing moves when numbers grow; the job column
takes what is left, and where the job ids would not fit, s/epoch, then node, give way rather
than wrap or cut them. A terminal too short for every row keeps the running, failed and queued
ones and counts the rest. A cell is never blank: it says why it has no value ("starting",
"queued", "measuring", -). The summary and the F1 note wrap at the terminal's width, never the
table's.
"""
from __future__ import annotations

import time
from collections import Counter

from orchestrator.cluster.progress import F1_NOTE, Board, JobStatus

NONE = "-"  # not known yet, or not for this state: the state column says which
GAP = 2  # spaces between columns
MIN_JOB = 12  # the job column's least width, however narrow the terminal
# name, justify, fixed width (None: from the values)
COLUMNS = (("job", "left", None), ("node", "left", 9), ("state", "left", 8), ("epoch", "right", None),
           ("val F1", "right", 6), ("s/epoch", "right", 7), ("ETA", "right", 9))
OPTIONAL = ("s/epoch", "node")  # dropped in this order when the terminal is too narrow for them
STYLES = {"running": "cyan", "starting": "yellow", "done": "green", "failed": "bold red", "queued": "dim",
          "cached": "dim", "stopped": "magenta", "interrupted": "magenta", "not started": "dim"}


class BoardView:
    """A rich renderable of the board, drawn afresh at each repaint."""

    def __init__(self, board: Board):
        self.board = board

    def __rich_console__(self, console, options):
        from rich.text import Text

        width, notes = options.max_width, self.board.notes()
        # The rows a terminal of this height has room for beside the lines around the table.
        around = 1 + (notes.count("\n") + 1 if notes else 0) + 2 + -(-len(F1_NOTE) // max(width, 1)) + 1
        every = job_rows(self.board)
        rows, hidden = fit_rows(every, options.size.height - around)
        yield Text(self.board.summary())
        if notes:
            yield Text(notes, style="yellow")
        yield job_table(rows, width, column_widths(every))  # widths of every row: none move as rows hide
        if hidden:
            states = Counter(r["state"] for r in hidden)
            yield Text(f"... and {len(hidden)} more ({', '.join(f'{n} {s}' for s, n in states.items())}) not shown: "
                       "a taller terminal shows them", style="dim")
        yield Text(F1_NOTE, style="dim")


def job_table(rows: list[dict[str, str]], width: int, widths: dict[str, int] | None = None):
    """The jobs' rows as a rich Table of at most `width` columns (`widths`: the columns' own)."""
    from rich import box
    from rich.table import Table

    shown = fit_columns(widths or column_widths(rows), width)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, GAP // 2),
                  collapse_padding=True)
    for name, justify, _ in COLUMNS:
        if name in shown:
            table.add_column(name, justify=justify, width=shown[name], no_wrap=True, overflow="ellipsis")
    for cells in rows:
        table.add_row(*(cells[name] for name in shown), style=STYLES.get(cells["state"], ""))
    return table


# Which rows stay when the terminal is too short for all: running ones first, cached ones last.
KEEP_ORDER = ("running", "starting", "failed", "interrupted", "queued", "not started", "stopped", "done", "cached")


def fit_rows(rows: list[dict[str, str]], room: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """At most `room` rows (at least 1), kept by KEEP_ORDER and shown in queue order; and the rows left out."""
    room = max(room, 1)
    if len(rows) <= room:
        return rows, []
    rank = sorted(range(len(rows)), key=lambda i: (KEEP_ORDER.index(rows[i]["state"]), i))
    kept = set(rank[:room])
    return [r for i, r in enumerate(rows) if i in kept], [r for i, r in enumerate(rows) if i not in kept]


def job_rows(board: Board, now: float | None = None) -> list[dict[str, str]]:
    """Every job's cells, in the board's (queue) order."""
    now = time.time() if now is None else now
    forecast = board.forecast(now)
    rows = []
    for job_id in list(board.plans):
        s, label = board.get(job_id), board.plans[job_id].label
        per = s.epoch_seconds()
        rows.append({"job": f"{job_id} {label}" if label else job_id, "node": s.node or NONE,
                     "state": s.shown_state(), "epoch": f"{s.epoch}/{s.epochs}" if s.epochs else NONE,
                     "val F1": f"{s.val_f1:.4f}" if s.val_f1 is not None else
                     "refit" if board.plans[job_id].refit_epochs is not None else NONE,
                     "s/epoch": f"{per:.1f}" if per else NONE, "ETA": eta_cell(s, forecast.get(job_id))})
    return rows


def eta_cell(s: JobStatus, left: float | None) -> str:
    """Time until the job is done; "measuring" for a running job whose time is not known yet."""
    if s.state not in ("running", "queued"):
        return NONE
    if left is None:
        return "measuring" if s.state == "running" else NONE
    return f"{left / 60:.1f} min"


def column_widths(rows: list[dict[str, str]]) -> dict[str, int]:
    """Each column's width: its fixed one, or its longest value (at least its name)."""
    out = {}
    for name, _, fixed in COLUMNS:
        longest = max([len(name)] + [len(r[name]) for r in rows])
        out[name] = max(fixed or 0, longest)
    return out


def fit_columns(widths: dict[str, int], width: int) -> dict[str, int]:
    """The columns shown and their widths within `width`: optional ones dropped until the job
    column fits whole (a job id cut short loses its fold or hash); it then takes what is left."""
    shown = dict(widths)

    def room() -> int:
        return width - sum(w for name, w in shown.items() if name != "job") - GAP * (len(shown) - 1)

    for name in OPTIONAL:
        if room() >= widths["job"]:
            break
        del shown[name]
    shown["job"] = max(min(widths["job"], room()), MIN_JOB)
    return shown
