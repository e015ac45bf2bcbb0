"""The report's "Label audit": the suspects with their photos, then the people worth a look.

A small or weak experiment often has no suspect (no one's p_wrong passes the cut) while its
real errors sit at the top of the ranking, so the page never stops at "nothing": it says why
there are no suspects (the highest p_wrong) and shows the "worth a look" tier's photos.
"""
from __future__ import annotations

from collections.abc import Sequence

from orchestrator.analysis.reporting.html import esc, num, section, simple_head, table
from orchestrator.analysis.reporting.inputs import AuditView, Suspect

WHY = ("People whose given label the OOF predictions contradict, from audit.csv. Score: the evidence for "
       "the given label (geometric mean of the blend's probabilities over the person's photos; low = doubtful); "
       "p(wrong), where the audit gives it: its estimated chance that the label is wrong. <b>Suspects</b> pass the "
       "cut (more likely wrong than right) and make up audit_relabel.csv; <b>worth a look</b> are the next people of "
       "each ranking whose p(wrong) is above the label-error prior: photos to check, never relabelled. Look at the "
       "photos before relabelling: mask1-5, then incorrect_mask and normal, framed for the mask check, which asks "
       "whether those two files are swapped.")


def audit_section(view: AuditView | None) -> str:
    if view is None:
        return section("audit", "Label audit", WHY, "<p>No audit.csv: run <code>python -m orchestrator.audit"
                       "</code>, then this report again.</p>")
    if not view.suspects and not view.review:
        return section("audit", "Label audit", WHY, f"<p>Nothing to show: {esc(view.rule)}.{_no_suspects(view)}</p>")
    where = f" Photos from {esc(view.photo_root)}/train/images." if view.photo_root else ""
    where += (' <span class="warn">audit.csv is older than this blend: run python -m orchestrator.audit '
              "again.</span>" if view.stale else "")
    parts = []
    if view.suspects:
        shown = f"{len(view.suspects)} of {view.listed}" if view.listed > len(view.suspects) else str(view.listed)
        parts += [f"<h3>Suspects</h3><p>Showing {shown}: {esc(view.rule)}.{where} "
                  '<a href="audit.csv">audit.csv</a> has them all.</p>', _people_table(view.suspects)]
        where = ""
    else:
        parts.append(f"<p>{_no_suspects(view).strip()}</p>")
    if view.review:
        shown = (f"{len(view.review)} of {view.review_listed}" if view.review_listed > len(view.review)
                 else str(len(view.review)))
        expected = sum(s.p_wrong or 0.0 for s in view.review)
        top = "the top of each ranking after the suspects" if view.suspects else "the top of each ranking"
        parts += [f"<h3>Worth a look</h3><p>Showing {shown}, {top}: about "
                  f"{expected:.1f} wrong labels expected among them (the sum of their p(wrong)). Not in "
                  '<a href="audit_relabel.csv">audit_relabel.csv</a>: relabel only those the photos convince you of. '
                  f'<a href="audit.csv">audit.csv</a> (column tier) has them all.{where}</p>', _people_table(view.review)]
    return section("audit", "Label audit", WHY, *parts)


def _no_suspects(view: AuditView) -> str:
    """One sentence on why no one is a suspect: the highest p(wrong) per attribute."""
    if view.suspects or not view.highest:
        return ""
    (attribute, person, p), rest = view.highest[0], view.highest[1:]
    others = "".join(f"; {esc(a)} {q:.3f}" for a, _, q in rest)
    return (f" <b>No suspects</b>: no one's p(wrong) passes the cut; the highest is {p:.3f} ({esc(attribute)}, "
            f"{esc(person)}{others}), so the models at this size are not sure enough that any label is wrong, and "
            "audit_relabel.csv is empty.")


def _people_table(people: Sequence[Suspect]) -> str:
    wrong = people[0].p_wrong is not None
    rows = []
    for s in people:
        photos = "".join(f'<img src="{uri}" alt="{esc(stem)}" title="{esc(stem)}"'
                         + (' class="pair"' if s.attribute == "mask" and stem in ("incorrect_mask", "normal") else "")
                         + ">" for stem, uri in s.photos)
        rows.append([esc(s.person), esc(s.attribute), f"{esc(s.given)} &rarr; <b>{esc(s.suggested)}</b>",
                     str(s.rank), f"{s.score:.3f}"] + ([num(s.p_wrong, 3)] if wrong else [])
                    + [photos or "photos not found"])
    head = simple_head(["person", "attribute", "given → suggested", "rank", "score"]
                       + (["p(wrong)"] if wrong else []), 3).replace("</tr>", '<th class="text">photos</th></tr>')
    photo_column = ["", "", "", "", ""] + ([""] if wrong else []) + ["photos"]
    return table(head, rows, text_columns=3, column_classes=photo_column)
