"""The report's first screen: what was chosen, how good it honestly is, and where it came from."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from orchestrator.analysis.ensembles.recipes import describe_method
from orchestrator.analysis.reporting.html import esc, interval, num
from orchestrator.analysis.reporting.sources import OPTIMISTIC_BADGE
from orchestrator.analysis.results import OofLogits

# (label, path relative to results/<exp>/): the files a reader goes to next
LINKS = (("submission", "blend/submission.csv"), ("audit", "audit.csv"), ("logs", "logs/"),
         ("run leaderboard", "leaderboard.csv"), ("blend leaderboard", "blend/leaderboard.csv"),
         ("weights", "blend/weights.json"))


def chosen_row(board: pd.DataFrame, method: str) -> pd.Series:
    rows = board[board.method == method]
    return rows.iloc[0] if len(rows) else pd.Series(dtype=object)


def scored(row: pd.Series, column: str) -> str:
    """`<b>0.4310</b> [0.4010, 0.4620]`: the interval only where the leaderboard has one."""
    bounds = interval(row.get(f"{column}_low"), row.get(f"{column}_high"))
    return f"<b>{num(row.get(column))}</b>" + (f" {bounds}" if bounds else "")


def truth_line(w: dict, row: pd.Series) -> tuple[str, str]:
    """The submission's real score, if blend --truth was given (weights.json, else the leaderboard)."""
    truth = w.get("truth") or {}
    real = truth.get("macro_f1", row.get("truth_macro_f1"))
    if real is None or pd.isna(real):
        return "not known", "give the answers to <code>python -m orchestrator.blend --truth FILE</code> to see it"
    accuracy = f", accuracy {truth['accuracy']:.4f}" if truth.get("accuracy") is not None else ""
    gap = real - w["nested"]["macro_f1"]
    source = esc(truth.get("file", "blend --truth's answers"))
    expected = (w.get("expected") or {}).get("macro_f1")
    against = f", {real - expected:+.4f} against the expected" if expected is not None else ""
    return (f"<b>{real:.4f}</b> macro F1{accuracy} ({gap:+.4f} against the nested estimate{against})",
            f"the submission scored against {source}")


def expected_row(w: dict, row: pd.Series) -> tuple[str, str, str]:
    """What the submission should score on new people (folds.repeats), or why it is not estimated."""
    e, name = w.get("expected") or {}, "expected on new people"
    if e.get("macro_f1") is None:
        return name, "not estimated", esc(e.get("why_none", "a blend written before expected scores: blend again"))
    value = scored(row, "expected_macro_f1") if len(row) and "expected_macro_f1" in row else num(e["macro_f1"])
    return (name, f"{value} macro F1",
            f"the nested estimate moved from {e['members_per_oof_row']} held-out predictions per OOF row to the "
            f"{e['members_per_eval_photo']} fold models the submission averages (measured on the repeats: "
            f"s(m) = s&infin; &minus; (s&infin; &minus; s1) / m); the interval adds the eval set's "
            f"~{e['eval_people_estimated']:.0f} people, a sample of their own. It assumes eval people drawn like "
            "the training people; it does not hold for pseudo-labelled eval photos")


def versus_cell(versus: dict) -> tuple[str, str]:
    """One comparison of weights.json: the chosen method minus a baseline, paired by person."""
    method = esc(versus.get("method"))
    if versus.get("chosen"):
        return (f"the chosen method is {esc(versus.get('baseline', method))} itself (<code>{method}</code>)",
                "nothing to compare it with; the other comparison still says what fitting gains")
    low, high = (list(versus.get("interval") or []) + [None, None])[:2]
    diff = f"difference {versus.get('difference', float('nan')):+.4f} {interval(low, high)}".rstrip()
    if versus.get("clearly_better"):
        return f'<span class="good">clearly better than <code>{method}</code></span>: {diff}', \
            "the interval of the nested difference (person bootstrap, paired) excludes 0"
    return (f'<span class="warn">not clearly better than <code>{method}</code></span>: {diff}',
            "the interval of the nested difference (person bootstrap, paired) includes 0: "
            f"{esc(versus.get('baseline', 'the simpler method'))} is as good a bet")


def choice_rows(w: dict) -> list[tuple[str, str, str]]:
    """Why the chosen method is not the top nested score (blend.choose one_se), when it is not."""
    choice = w.get("choice") or {}
    if not choice.get("top") or choice["top"] == w["method"]:
        return []
    return [("choice", f"the simplest method within noise of the top: <code>{esc(choice['top'])}</code> scores "
             f"{choice['margin']:.4f} higher (nested), less than the noise of the difference, {choice['noise']:.4f}",
             "one-standard-error rule: of the methods chance cannot tell from the top (paired person bootstrap "
             "sd), the one with the fewest fitted parts (blend.choose=one_se)")]


def versus_rows(w: dict) -> list[tuple[str, str, str]]:
    """'versus the equal soft vote' and 'versus the best single model' (an older weights.json: its one
    'versus simpler')."""
    if w.get("versus"):
        return [(f"versus {v.get('baseline', v.get('method'))}", *versus_cell(v)) for v in w["versus"]]
    return [("versus simpler", *versus_cell(w["versus_simpler"]))] if w.get("versus_simpler") else []


def single_line(folds: pd.DataFrame, board: pd.DataFrame, optimistic: set[str] = frozenset()) -> tuple[str, str]:
    pooled = folds["OOF pooled"]
    best = pooled.idxmax()
    single = chosen_row(board, "single")
    extra = f"; as the method <code>single</code>, nested {num(single.get('nested_macro_f1'))}" if len(single) else ""
    badge = OPTIMISTIC_BADGE if best in optimistic else ""
    return (f"<b>{esc(best)}</b>{badge}: OOF macro F1 {pooled[best]:.4f}{extra}",
            "the best model alone, for scale: a blend should beat it")


def when(text) -> str:
    """An ISO time (the manifest's or the blend's) as UTC minutes; as given if unparsable."""
    if not text:
        return "unknown"
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return esc(text)
    moment = moment.astimezone(UTC) if moment.tzinfo else moment
    return moment.strftime("%Y-%m-%d %H:%M") + (" UTC" if moment.tzinfo else "")


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 7200 else f"{seconds / 60:.1f} min" if seconds >= 120 \
        else f"{seconds:.1f} s"


def trained_when(jobs) -> str:
    """When the jobs trained: from the first one's start to the last one's end."""
    ends = pd.to_numeric(jobs.results.get("finished", pd.Series(dtype=float)), errors="coerce")
    starts = ends - pd.to_numeric(jobs.results.seconds, errors="coerce").fillna(0)
    if ends.notna().sum() == 0:
        return "jobs trained: unknown (no job results found)"
    first, last = (datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC") for t in (starts.min(), ends.max()))
    return f"jobs trained {first}" + (f" to {last}" if last != first else "")


def run_rows(manifest: dict, w: dict, jobs) -> list[tuple[str, str, str]]:
    """When, from which code, and how long: dates, git revision, summed job time and blend time."""
    git = str(manifest.get("git") or "unknown")
    short = git[:12] + ("-dirty" if git.endswith("-dirty") else "")
    seconds = pd.to_numeric(jobs.results.seconds, errors="coerce").dropna()
    train = (f"{duration(seconds.sum())} in {len(seconds)} jobs (longest {duration(seconds.max())})"
             if len(seconds) else "no job results found")
    blend = f"; blend {duration(w['seconds'])}" if w.get("seconds") is not None else ""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [("dates", f"{trained_when(jobs)} · prepared {when(manifest.get('created'))} · "
             f"blend {when(w.get('created'))} · report {now}",
             "a cached re-run prepares again but trains nothing, so its jobs keep their dates"),
            ("git revision", f'<code title="{esc(git)}">{esc(short)}</code>', "of the code that prepared the run"),
            ("time", train + blend, "jobs' own seconds summed, so several at once take less wall time")]


def links_line(exp_dir: Path) -> str:
    links = [f'<a href="{esc(href)}">{esc(href)}</a>' if (exp_dir / href).exists()
             else f'<span title="not written yet">{esc(href)} (absent)</span>' for _, href in LINKS]
    return " · ".join(links)


def summary_section(exp_dir: Path, oof: OofLogits, blend, folds: pd.DataFrame, manifest: dict, jobs,
                    sources: list[tuple[str, str, str]] = (), optimistic: set[str] = frozenset()) -> str:
    """`sources`: rows on the experiments pooled and OOF-optimistic weights (report_sources)."""
    w, board = blend.weights, blend.leaderboard
    method = w["method"]
    row = chosen_row(board, method)
    nested, ins = w["nested"], w["in_sample"]
    members = (w.get("expected") or {}).get("members_per_oof_row") or 1
    by = "one fold model" if members == 1 else f"the average of its {members} held-out fold models (one per repeat)"
    rows = [("nested estimate", f"{scored(row, 'nested_macro_f1') if len(row) else num(nested['macro_f1'])} "
             f"macro F1, accuracy {nested['accuracy']:.4f}",
             f"each image predicted by the method fitted without its fold, by {by}; it ranks the methods. The "
             f"submission averages all the fold models, which scores higher (see the expected score), while "
             f"being the best of {len(board)} methods pulls the other way"),
            expected_row(w, row),
            ("in-sample", f"{scored(row, 'in_sample_macro_f1') if len(row) else num(ins['macro_f1'])} macro F1",
             "fitted and scored on the same rows: flatters, for comparison only"),
            ("true score", *truth_line(w, row))]
    rows += refit_rows(w)
    rows += choice_rows(w)
    rows += versus_rows(w)
    pooled = len(w.get("experiments") or [])
    rows += [*sources, ("best single model", *single_line(folds, board, optimistic)),
             ("data", f"{len(oof.models)} models{f' of {pooled} experiments' if pooled > 1 else ''}"
                     f"{specialists_text(w)}, "
                      f"{len(oof.target)} OOF images of {len(set(oof.person))} people, "
                      f"{len(set(oof.fold.tolist()))} folds; chosen by nested {esc(w.get('metric', 'macro_f1'))}",
              f"rows hash {esc(w.get('rows_hash', '?'))}"),
             *run_rows(manifest, w, jobs),
             ("files", links_line(exp_dir), "")]
    excluded = w.get("excluded") or []
    if excluded:
        rows.append(("excluded", "; ".join(f"{esc(e['model'])}: {esc(e['reason'])}" for e in excluded),
                     "models the blend could not use"))
    cells = "".join(f'<tr><th>{esc(k)}</th><td>{v}</td><td class="note">{n}</td></tr>' for k, v, n in rows)
    return (f'<section id="summary"><div class="headline">Chosen: <span id="chosen-method">{esc(method)}</span>'
            f'</div><p class="recipe">{esc(describe_method(method))}</p><table>{cells}</table></section>')


def refit_rows(w: dict) -> list[tuple[str, str, str]]:
    """Where the submission's test logits come from when refit models (trained on every person) are in them."""
    refit = w.get("refit") or {}
    if not refit.get("models"):
        return []
    how = ("each averaged half and half with its fold models' mean" if refit["combine"] == "average"
           else "each replacing its fold models' mean")
    missing = f"; no refit logits for {esc(', '.join(refit['missing']))}" if refit.get("missing") else ""
    return [("refit", f"{esc(', '.join(refit['models']))}: {how}{missing}",
             "trained on every training person for the folds' median best epoch; they have no OOF rows, so "
             "every score on this page (nested, expected, in-sample) is of the fold models, and the weights were "
             "fitted on those; only the submission's test logits include the refit models")]


def specialists_text(w: dict) -> str:
    """' + 1 age specialist (age_only)': the blend's attribute specialists, if it had any."""
    special = {m: t for m, t in (w.get("targets") or {}).items() if t != "all"}
    if not special:
        return ""
    named = ", ".join(f"{esc(m)}: {esc(t)}" for m, t in special.items())
    return f" + {len(special)} attribute specialist{'s' if len(special) > 1 else ''} ({named})"
