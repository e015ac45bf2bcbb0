"""What `python -m orchestrator.audit` prints: per attribute one line on its suspects (or why
there are none), the people worth a look, and a short table of the top of its ranking; with a
truth file, which of those are planted mislabels and how many of the planted ones the tiers hold.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from orchestrator.analysis.mislabels.suspects import Assessment
from tasks.labels import AGE_NAMES, GENDER_NAMES

SHOWN_SUSPECTS = 5  # suspect rows per attribute in the console table; audit.csv has them all
# audit.csv's mask hypotheses, shortened to fit a terminal row
NAMES = {"gender": GENDER_NAMES, "age": AGE_NAMES, "mask": ("as named", "swapped")}


def suspects_line(a: Assessment) -> str:
    """`gender: 3 suspects of ...`, or for none the highest p_wrong and what it means."""
    people = len(a.people)
    if a.suspect.any():
        n = int(a.suspect.sum())
        return (f"{a.attribute}: {n} suspect{'s' if n != 1 else ''} of {people} people (expected false alarms about "
                f"{a.expected_false_alarms:.1f})")
    top = float(a.p_wrong[0]) if people else 0.0
    return (f"{a.attribute}: no suspects of {people} people: highest p_wrong {top:.3f}, below the cut {a.cut:g} "
            f"(the models are not sure enough of any error)")


def review_line(a: Assessment) -> str:
    n = int(a.review.sum())
    if not n:
        return (f"  worth a look: no one else (nobody past the suspects has p_wrong above the prior "
                f"{a.calibration.error_rate:g})")
    more = " more" if a.suspect.any() else ""
    return (f"  worth a look: {n}{more} people, p_wrong {a.p_wrong[a.review].min():.3f} to "
            f"{a.p_wrong[a.review].max():.3f}: about {a.expected_in_review:.1f} wrong labels expected among them")


def top_table(a: Assessment, planted: set[str] | None) -> str:
    """The suspects (the first SHOWN_SUSPECTS) and the people worth a look, one row each."""
    rows = np.concatenate([np.flatnonzero(a.suspect)[:SHOWN_SUSPECTS], np.flatnonzero(a.review)])
    if not len(rows):
        return ""
    names = NAMES[a.attribute]
    cells = [[str(i + 1), str(a.people[i]), f"{a.p_wrong[i]:.3f}", str(a.tier[i]),
              f"{names[a.given[i]]} -> {names[a.suggested[i]]}"] for i in rows]
    head = ["rank", "person", "p_wrong", "tier", "given -> suggested"]
    if planted is not None:
        head.append("planted")
        cells = [row + ["yes" if row[1] in planted else ""] for row in cells]
    hidden = int(a.suspect.sum()) - SHOWN_SUSPECTS
    more = [f"    ... and {hidden} more suspects in audit.csv"] if hidden > 0 else []
    return "\n".join(_aligned([head] + cells, right=(0, 2)) + more)


def _aligned(rows: list[list[str]], right: tuple[int, ...]) -> list[str]:
    """Rows as indented columns: numbers right-aligned, text left-aligned."""
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    return ["    " + "  ".join(c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))
            .rstrip() for r in rows]


def planted_line(a: Assessment, planted: set[str]) -> str:
    """How many planted mislabels the suspects and the people worth a look hold; where the rest rank."""
    if not planted:
        return "    planted: none for this attribute"
    tiered = set(a.people[a.suspect | a.review])
    missed = [(int(np.flatnonzero(a.people == p)[0]), p) for p in planted - tiered if p in set(a.people)]
    where = ", ".join(f"{p} at rank {i + 1}, p_wrong {a.p_wrong[i]:.3f}" for i, p in sorted(missed)[:3])
    return (f"    planted: {len(planted & tiered)} of {len(planted)} among the suspects and worth a look"
            + (f" (not: {where})" if where else ""))


def attribute_report(a: Assessment, planted: set[str] | None = None) -> str:
    parts = [suspects_line(a), review_line(a), top_table(a, planted)]
    if planted is not None:
        parts.append(planted_line(a, planted))
    return "\n".join(p for p in parts if p)


def truth_table(at_cut: pd.DataFrame) -> str:
    """precision_recall_at_cut as text; no NaN: an attribute without suspects says so."""
    if not len(at_cut):
        return "  no mislabels, no suspects"
    shown = at_cut.astype(object)
    shown["precision"] = ["no suspects" if n == 0 else f"{p:.3f}" for n, p in zip(at_cut.suspects, at_cut.precision)]
    for column in ("recall", "recall_with_review"):
        shown[column] = ["-" if t == 0 else f"{r:.3f}" for t, r in zip(at_cut.true, at_cut[column])]
    shown["expected_false_alarms"] = [f"{v:.3f}" for v in at_cut.expected_false_alarms]
    return shown.to_string(index=False)
