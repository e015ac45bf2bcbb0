"""The report's "Pseudo labels" section for a second round: where its eval-photo labels came
from, how many each fold trained on, and whether its OOF scores can be trusted.
'' when the experiment has no pseudo labels (no pseudo/summary.json)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from orchestrator.analysis.reporting.html import esc, frame_table, img, section


def pseudo_section(exp_dir: Path) -> str:
    folder = exp_dir / "pseudo"
    if not (folder / "summary.json").is_file():
        return ""
    s = json.loads((folder / "summary.json").read_text())
    if s["per_fold"]:
        how = ("<p class=\"good\">Per fold: fold k's jobs learned only labels made by round 1's fold-k models, which "
               "never saw fold k's people, blended by round 1's method refitted without fold k's OOF rows. The OOF "
               "scores, and every blend weight and nested estimate fitted on them, stay honest.</p>")
    else:
        how = ("<p class=\"warn\">OOF optimistic: every fold learned labels from the full round-1 blend, whose models "
               "saw every fold's people (<code>pseudo.per_fold: false</code>). This experiment's OOF scores, and "
               "any blend weight or nested estimate fitted on them, are flattered.</p>")
    source = (f"<p>Source: <code>{esc(s['source'])}</code> ({esc(', '.join(s['models']))}), "
              f"{'its chosen blend ' + esc(s['method']) if s['from_blend'] else 'the equal soft vote (no blend)'}; "
              f"threshold {s['threshold']:g}, at most {s['max_share']:.0%} of a fold's training set, "
              f"{'soft' if s['soft'] else 'hard'} labels, loss weight {s['weight']:g}. "
              f"What each fold trained on: <code>pseudo/fold&lt;k&gt;.parquet</code>.</p>")
    folds = pd.DataFrame([{"fold": k, "pseudo-labelled photos": f["rows"], f"probability >= {s['threshold']:g}":
                           f["eligible"], "cap": f["cap"], "hash": f["hash"][:8]} for k, f in s["folds"].items()])
    plot = folder / "pseudo.png"
    picture = img(plot.read_bytes(), "pseudo-label confidence and classes per fold") if plot.is_file() else ""
    why = (f"A second round: each fold's jobs trained on its training people plus eval photos labelled by round 1 "
           f"(of {s['eval_images']} eval photos, the ones round 1 was sure of). Pseudo rows never enter validation "
           "or OOF.")
    return section("pseudo", "Pseudo labels", esc(why), how + source + frame_table(folds.set_index("fold")) + picture)
