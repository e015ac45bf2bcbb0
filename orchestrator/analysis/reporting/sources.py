"""The experiments behind a blend's report: the report's own folder, or each experiment a pooled
blend (`blend --results A --results B`) drew its models from, as weights.json lists them.

Job curves, log links and the run's fold scores are each experiment's own files, shown under
the models' pooled names; models of an OOF-optimistic experiment (pseudo labels from models
that saw every fold) carry a badge wherever their OOF scores are shown.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from orchestrator.analysis.ensembles.pooled import pooled_name, recorded_dirs
from orchestrator.analysis.reporting.html import esc, interval, section
from orchestrator.analysis.reporting.inputs import Jobs, read_jobs

OPTIMISTIC = ("trained on pseudo labels from models that saw every fold (pseudo.per_fold: false), so its OOF "
              "scores, and any weight or nested estimate fitted on them, are optimistic")
OPTIMISTIC_BADGE = f'<span class="badge optimistic" title="{esc(OPTIMISTIC)}">OOF optimistic</span>'


@dataclass(frozen=True)
class ReportSource:
    name: str
    folder: Path
    several: bool  # pooled with other experiments: its models are named <name>/<model>
    oof_optimistic: bool

    def model_name(self, model: str) -> str:
        return pooled_name(self.name, model, self.several)


def report_sources(exp_dir: Path, weights: dict) -> tuple[ReportSource, ...]:
    listed = weights.get("experiments") or [{"name": exp_dir.name}]
    several = len(listed) > 1
    return tuple(ReportSource(e["name"], d, several, bool(e.get("oof_optimistic")))
                 for e, d in zip(listed, recorded_dirs(exp_dir, weights)))


def pooled_jobs(exp_dir: Path, sources: tuple[ReportSource, ...]) -> Jobs:
    """Every experiment's finished jobs under the pooled model names, each with a link to its
    driver log relative to the report (None where the log is not there)."""
    results, curves = [], []
    for s in sources:
        jobs = read_jobs(s.folder)
        logs = [s.folder / "logs" / f"{job}.log" for job in jobs.results.job]
        results.append(jobs.results.assign(model=jobs.results.model.map(s.model_name),
                                           log=[os.path.relpath(p, exp_dir) if p.is_file() else None for p in logs]))
        curves.append(jobs.curves.assign(model=jobs.curves.model.map(s.model_name)))
    return Jobs(pd.concat(results, ignore_index=True), pd.concat(curves, ignore_index=True))


def run_boards(sources: tuple[ReportSource, ...]) -> dict[str, Path]:
    """Each experiment's run leaderboard.csv by the prefix of its models' pooled names."""
    return {s.model_name(""): s.folder / "leaderboard.csv" for s in sources}


def optimistic_models(weights: dict, models: pd.DataFrame | None) -> set[str]:
    """Models whose OOF is flattered: blend/models.csv's flag, else weights.json's."""
    if models is not None and "oof_optimistic" in models.columns:
        return set(models.name[models.oof_optimistic.astype(bool)])
    return {name for name, m in (weights.get("models") or {}).items() if m.get("oof_optimistic")}


def model_label(name: str, optimistic: set[str]) -> str:
    return esc(name) + (OPTIMISTIC_BADGE if name in optimistic else "")


def optimistic_note(optimistic: set[str], shown) -> str:
    """What the badge means, for a section that shows any of the marked models."""
    return f" <b>OOF optimistic</b>: {OPTIMISTIC}." if optimistic & set(shown) else ""


def source_rows(exp_dir: Path, sources: tuple[ReportSource, ...], weights: dict) -> list[tuple[str, str, str]]:
    """Summary rows: the experiments pooled (when not just this folder) and the optimistic warning."""
    rows = []
    if len(sources) > 1 or sources[0].folder.resolve() != exp_dir.resolve():
        links = " · ".join(f'<a href="{esc(os.path.relpath(s.folder, exp_dir))}/">{esc(s.name)}</a>'
                           + (OPTIMISTIC_BADGE if s.oof_optimistic else "") for s in sources)
        rows.append(("experiments", links, "the models of each, pooled and blended as one; names "
                     "<code>&lt;experiment&gt;/&lt;model&gt;</code>" if len(sources) > 1 else "its models"))
    rows += rounds_rows(weights)
    weighted = weights.get("oof_optimistic_weighted") or []
    if weighted:
        rows.append(("OOF optimistic", f'<span class="warn">the chosen blend weighs {len(weighted)} OOF-optimistic '
                     f"model(s): {esc(', '.join(weighted))}</span>",
                     "their pseudo labels came from models that saw every fold: their weights and the nested "
                     "estimate above are flattered"))
    return rows


def _round_cell(r: dict) -> str:
    """'demo: soft_greedy, nested 0.4312 [0.4010, 0.4620]; pool minus it +0.0060 [...]; true 0.4519'."""
    low, high = (list(r.get("nested_macro_f1_interval") or []) + [None, None])[:2]
    diff = r.get("pool_minus_round") or {}
    d_low, d_high = (list(diff.get("interval") or []) + [None, None])[:2]
    verdict = ('<span class="good">pool clearly better</span>' if diff.get("clearly_better") else
               '<span class="warn">pool clearly worse</span>' if diff.get("clearly_worse") else "no clear difference")
    true = f"; true <b>{r['truth_macro_f1']:.4f}</b>" if r.get("truth_macro_f1") is not None else ""
    return (f"<b>{esc(r['experiment'])}</b> alone: <code>{esc(r['method'])}</code> ({esc(r.get('method_from', ''))}), "
            f"nested <b>{r['nested_macro_f1']:.4f}</b> {interval(low, high)}; "
            f"pool minus it {diff.get('difference', float('nan')):+.4f} {interval(d_low, d_high)}, {verdict}{true}")


def rounds_rows(weights: dict) -> list[tuple[str, str, str]]:
    """A pooled blend's 'each round alone' row: every round's own chosen blend by the pool's estimate."""
    rounds = weights.get("rounds_alone") or []
    if not rounds:
        return []
    pooled, truth = weights.get("nested") or {}, weights.get("truth") or {}
    true = f"; true <b>{truth['macro_f1']:.4f}</b>" if truth.get("macro_f1") is not None else ""
    low, high = (list(pooled.get("macro_f1_interval") or []) + [None, None])[:2]
    head = (f"<b>pool</b>: <code>{esc(weights.get('method'))}</code>, nested "
            f"<b>{pooled.get('macro_f1', float('nan')):.4f}</b> {interval(low, high)}{true}")
    cells = "<br>".join([head, *(_round_cell(r) for r in rounds)])
    return [("each round alone", cells,
             "each round's own chosen method (its blend/weights.json, else chosen afresh) fitted on its models alone "
             "in the same nested folds, rows and people as the pool: the same estimate, so comparable; the "
             "difference is paired by person")]


def pooled_audit_section(exp_dir: Path, sources: tuple[ReportSource, ...]) -> str:
    """A `blend --out` folder has no experiment to audit: the audit runs on one round's models, and
    its suspects show in that round's own report."""
    why = "People whose given label the OOF predictions contradict: an audit of one experiment's models."
    items = []
    for s in sources:
        folder = esc(s.folder)
        audit, report = s.folder / "audit.csv", s.folder / "report.html"
        found = (f'; its <a href="{esc(os.path.relpath(audit, exp_dir))}">audit.csv</a> is there' if audit.is_file()
                 else "")
        shown = (f', then <code>python -m orchestrator.report --results {folder}</code> (its '
                 f'<a href="{esc(os.path.relpath(report, exp_dir))}">report</a>)' if (s.folder / "blend").is_dir()
                 else f" (its report needs a blend of its own: <code>python -m orchestrator.blend --results {folder}"
                      "</code>)")
        items.append(f"<li><code>python -m orchestrator.audit --results {folder}</code>{shown}{found}</li>")
    return section("audit", "Label audit", why,
                   f"<p>This folder holds a blend of {esc(', '.join(s.name for s in sources))} (<code>blend --out"
                   "</code>) and has no audit of its own: the audit works "
                   "on one experiment's models and writes its audit.csv into that experiment's folder, whose own "
                   f"report shows the suspects with their photos:</p><ul>{''.join(items)}</ul>")
