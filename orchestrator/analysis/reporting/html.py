"""HTML pieces of the report: the style, tables, numbers with intervals, and a glossary of
blend method names (described by ensembles.recipes).

Tables are written by hand rather than by DataFrame.to_html: the chosen row needs its own
class, headers need two levels, and cells may hold an interval on a second line.
"""
from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence

import pandas as pd

from orchestrator.analysis.ensembles.recipes import describe_method

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;max-width:1340px;
 margin:0 auto;padding:0 24px 48px;color:#1d232a;line-height:1.4}
h1{font-size:24px;margin:14px 0 6px}h2{font-size:20px;margin:34px 0 4px;border-bottom:1px solid #d5dae0}
h3{font-size:16px;margin:18px 0 4px}
p.why{color:#4a5561;margin:2px 0 10px;max-width:1100px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{padding:3px 9px;text-align:right;vertical-align:top}th{background:#eef1f4;font-weight:600}
td.text,th.text{text-align:left}tbody tr:nth-child(even){background:#f7f8fa}
tr.chosen,tr.chosen:nth-child(even){background:#fff1b8;font-weight:600}
.badge{background:#d9480f;color:#fff;border-radius:3px;padding:0 5px;font-size:11px;margin-left:6px}
.badge.optimistic{background:#862e9c;white-space:nowrap}
small.ci{color:#59636e;font-weight:400;white-space:nowrap}
#summary{border:2px solid #1c7ed6;border-radius:6px;padding:10px 16px;background:#f4f9ff}
#summary .headline{font-size:19px}#summary p.recipe{margin:0 0 6px;color:#4a5561;font-size:13.5px}
#chosen-method{font-weight:700;font-family:monospace}
#summary table{font-size:14px;margin:0}#summary th{background:none;text-align:left;white-space:nowrap}
#summary td{text-align:left;min-width:40%}#summary td.note{color:#4a5561;font-size:12.5px;min-width:0;width:34%}
.warn{color:#c92a2a;font-weight:600}.good{color:#2b8a3e;font-weight:600}
ul.glossary{font-size:13px;columns:2;column-gap:32px;padding-left:18px}ul.glossary li{break-inside:avoid}
code{font-size:12.5px}img{max-width:100%}
.track{display:inline-block;width:100px;height:10px;background:#e9edf1;vertical-align:middle;margin-right:8px}
.bar{display:block;height:10px;background:#4c9be8}
th.group{text-align:center;border-bottom:1px solid #c5ccd3}th.first,td.first{border-left:1px solid #d5dae0}
td.photos{text-align:left;white-space:nowrap}.photos img{height:100px;margin-right:3px;border:1px solid #ccd;
 max-width:none}#audit td:first-child{white-space:nowrap}#audit td:nth-child(3){max-width:210px}
.photos img.pair{border:2px solid #d9480f}
"""

def data_uri(data: bytes, mime: str) -> str:
    """Bytes as a data: URI, so the page carries its images and needs no other file."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def img(data: bytes, alt: str, mime: str = "image/png") -> str:
    return f'<img alt="{esc(alt)}" src="{data_uri(data, mime)}">'


def esc(value) -> str:
    return html.escape(str(value))


def num(value, digits: int = 4) -> str:
    """A float as text; blank for a missing value (a hard vote has no log loss)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else esc(value)


def interval(low, high, digits: int = 4) -> str:
    if low is None or high is None or any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        return ""
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def with_interval(row: pd.Series, column: str) -> str:
    """`0.4310` plus, where blend/leaderboard.csv has <column>_low/_high, the interval below it."""
    bounds = interval(row.get(f"{column}_low"), row.get(f"{column}_high"))
    return num(row.get(column)) + (f'<br><small class="ci">{bounds}</small>' if bounds else "")


def section(anchor: str, title: str, why: str, *body: str) -> str:
    """A titled section; `why` is the one line a reader would otherwise ask for."""
    note = f'<p class="why">{why}</p>' if why else ""
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{note}\n' + "\n".join(body) + "</section>"


def glossary(names: Iterable[str]) -> str:
    items = "".join(f"<li><code>{esc(n)}</code>: {esc(describe_method(n))}</li>" for n in names)
    return f'<ul class="glossary">{items}</ul>'


def table(head: str, rows: Sequence[Sequence[str]], text_columns: int = 1, row_classes: Sequence[str] = (),
          column_classes: Sequence[str] = (), attrs: str = "") -> str:
    """<table> from ready HTML: `head` is the <thead> content; the first `text_columns` cells
    of each row are left-aligned text; `column_classes` adds a class to each column's cells."""
    body = []
    for i, cells in enumerate(rows):
        tds = []
        for j, cell in enumerate(cells):
            names = " ".join(n for n in ("text" if j < text_columns else "",
                                         column_classes[j] if j < len(column_classes) else "") if n)
            tds.append(f'<td class="{names}">{cell}</td>' if names else f"<td>{cell}</td>")
        cls = f' class="{row_classes[i]}"' if i < len(row_classes) and row_classes[i] else ""
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    return f"<table{attrs}><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def simple_head(columns: Sequence[str], text_columns: int = 1) -> str:
    return "<tr>" + "".join(f'<th class="text">{esc(c)}</th>' if i < text_columns else f"<th>{esc(c)}</th>"
                            for i, c in enumerate(columns)) + "</tr>"


def frame_table(frame: pd.DataFrame, index_name: str | None = None, labels: Sequence[str] | None = None) -> str:
    """A DataFrame with its index as the first (text) column; floats to 4 decimals. `labels`:
    ready HTML for the index cells (e.g. a model's name with a badge)."""
    columns = [index_name or frame.index.name or ""] + [str(c) for c in frame.columns]
    labels = labels if labels is not None else [esc(i) for i in frame.index]
    rows = [[label] + [num(v) for v in values] for label, values in zip(labels, frame.to_numpy().tolist())]
    return table(simple_head(columns), rows)


# (blend/leaderboard.csv column, header group, header) in the order shown
BOARD_COLUMNS = (
    ("nested_macro_f1", "macro F1", "nested"), ("in_sample_macro_f1", "macro F1", "in-sample"),
    ("truth_macro_f1", "macro F1", "true (test)"),
    ("nested_accuracy", "accuracy", "nested"), ("in_sample_accuracy", "accuracy", "in-sample"),
    ("nested_mask_f1", "nested F1 per attribute", "mask"), ("nested_gender_f1", "nested F1 per attribute", "gender"),
    ("nested_age_f1", "nested F1 per attribute", "age"),
    ("nested_log_loss", "log loss", "nested"), ("in_sample_log_loss", "log loss", "in-sample"),
)


def methods_table(board: pd.DataFrame, chosen: str) -> str:
    """Every blend method, best nested score first, the chosen one highlighted."""
    shown = [c for c in BOARD_COLUMNS if c[0] in board.columns]
    groups: list[list] = []
    for _, group, _ in shown:
        if groups and groups[-1][0] == group:
            groups[-1][1] += 1
        else:
            groups.append([group, 1])
    firsts = [i == 0 or shown[i - 1][1] != group for i, (_, group, _) in enumerate(shown)]
    edge = ["first" if f else "" for f in firsts]  # a rule left of each group
    head = ('<tr><th class="text" rowspan="2">method</th>'
            + "".join(f'<th class="group first" colspan="{n}">{esc(g)}</th>' for g, n in groups) + "</tr><tr>"
            + "".join(f'<th class="{e}">{esc(label)}</th>' for e, (_, _, label) in zip(edge, shown)) + "</tr>")
    rows, classes = [], []
    for _, row in board.iterrows():
        is_chosen = row["method"] == chosen
        name = (f'<span title="{esc(describe_method(row["method"]))}">{esc(row["method"])}</span>'
                + ('<span class="badge">chosen</span>' if is_chosen else ""))
        rows.append([name] + [with_interval(row, column) for column, _, _ in shown])
        classes.append("chosen" if is_chosen else "")
    return table(head, rows, row_classes=classes, column_classes=["", *edge], attrs=' id="methods"')
