"""What a fitted blend writes and prints: blend/ files, the leaderboard, the summary lines.

Every macro F1 goes out with its person-bootstrap interval (orchestrator.analysis.ensembles.uncertainty):
with a handful of old-age people per class, macro F1 moves by 0.02+ by chance, so a point
value alone would claim more than the OOF rows can tell.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.analysis.ensembles.choice import Choice
from orchestrator.analysis.ensembles.fitting import BlendResult, Comparison
from orchestrator.analysis.ensembles.pooled import PooledModel
from orchestrator.analysis.ensembles.uncertainty import (
    DESCRIPTION,
    LEVEL,
    RESAMPLES,
    SEED,
    Interval,
    PersonBootstrap,
    person_bootstrap,
)
from orchestrator.analysis.results import BlendInputs, OofLogits
from orchestrator.analysis.specialists import Specialists
from tasks.atomic import atomic_dir
from tasks.labels import ALL, ATTRIBUTES, target_labels
from tasks.log import Log, to_stdout
from tasks.metrics import score

BOOTSTRAP = {"unit": "person", "resamples": RESAMPLES, "seed": SEED, "level": LEVEL, "interval": "percentile"}


def _with_interval(prefix: str, interval: Interval) -> dict:
    return {f"{prefix}_macro_f1": interval.estimate, f"{prefix}_macro_f1_low": interval.low,
            f"{prefix}_macro_f1_high": interval.high}


# blend/leaderboard.csv's paired tests: each method's nested macro F1 minus each baseline's (empty
# on the baseline's own row), so that every row, the equal vote's too, has its comparison.
VERSUS_COLUMNS = {"the equal soft vote": "nested_minus_equal_vote", "the best single model": "nested_minus_single"}


def _versus_columns(versus: Sequence[Comparison]) -> dict:
    columns = {}
    for c in versus:
        d, prefix = c.difference, VERSUS_COLUMNS[c.baseline]
        columns |= _with_interval(prefix, Interval(np.nan, np.nan, np.nan) if d is None else d)
    return columns


def leaderboard(result: BlendResult, truth: np.ndarray | None = None) -> pd.DataFrame:
    rows = []
    for i, r in enumerate(result.methods):
        ins, nest = r.in_sample.scores, r.nested.scores
        row = {"method": r.fitted.recipe.name, **_with_interval("in_sample", r.in_sample.macro_f1_interval),
               **_with_interval("nested", r.nested.macro_f1_interval),
               "in_sample_accuracy": ins.accuracy, "nested_accuracy": nest.accuracy,
               "nested_mask_f1": nest.mask_f1, "nested_gender_f1": nest.gender_f1, "nested_age_f1": nest.age_f1,
               "in_sample_log_loss": r.in_sample.log_loss, "nested_log_loss": r.nested.log_loss,
               "chosen": i == result.chosen_index, "complexity": r.fitted.recipe.complexity,
               # NaN without folds.repeats: nothing measured what averaging the fold models adds
               **_with_interval("expected", r.expected or Interval(np.nan, np.nan, np.nan))}
        if truth is not None:
            row["truth_macro_f1"] = score(truth, r.test_labels).macro_f1
        rows.append(row | _versus_columns(r.versus))
    return pd.DataFrame(rows)


def comparison_record(c: Comparison) -> dict:
    """weights.json's `versus` entry; `chosen` true (and no difference) when the chosen method is the baseline."""
    d = c.difference
    return {"method": c.method, "baseline": c.baseline, "chosen": c.is_chosen,
            "difference": None if d is None else round(d.estimate, 5), "interval": None if d is None else d.record(),
            "clearly_better": c.clearly_better}


def model_table(models: Sequence[PooledModel], result: BlendResult, oof: OofLogits,
                specialists: Specialists | None = None) -> pd.DataFrame:
    """blend/models.csv: per model its experiment, its OOF macro F1 alone (person-bootstrap
    interval), its weight and temperature in the chosen blend, and whether its OOF is optimistic.
    With specialists also each model's target (a specialist's macro F1 is its attribute's alone)
    and, for a per-attribute blend, its weight per attribute."""
    boot, fitted = PersonBootstrap.draw(oof.target, oof.person), result.chosen.fitted
    names, targets = [m.name for m in models], [m.target for m in models]
    record = fitted.to_record(tuple(names), targets)
    rows = []
    for i, m in enumerate(models):
        row = {"name": m.name, "experiment": m.experiment, "model": m.model,
               **({"target": m.target} if specialists else {}),
               **_with_interval("oof", _alone(boot, oof, specialists, m.name, m.target, i)),
               "weight": round(float(record["weights"][m.name]), 6)}
        if specialists:
            per = record.get("attribute_weights") or {}
            row |= {f"weight_{a}": per[a].get(m.name, 0.0) if per else np.nan for a in ATTRIBUTES}
        rows.append(row | {"temperature": round(float(record["temperatures"].get(m.name, 1.0)), 4),
                           "oof_optimistic": m.oof_optimistic})
    return pd.DataFrame(rows)


def _alone(boot: PersonBootstrap, oof: OofLogits, specialists: Specialists | None, name: str, target: str,
           i: int) -> Interval:
    """A model's OOF macro F1 alone: of the 18 classes, or a specialist's of its attribute."""
    if target == ALL:
        return boot.interval(oof.logits[i].argmax(-1))
    own = specialists.oof[target]
    return person_bootstrap(target_labels(oof.target, target), own.logits[own.models.index(name)].argmax(-1),
                            oof.person)


def print_models(table: pd.DataFrame, log: Log = to_stdout) -> None:
    shown = pd.DataFrame({"experiment": table.experiment, "model": table.model})
    if "target" in table.columns:
        shown["predicts"] = table.target
    shown["OOF macro F1"] = [Interval(*v).text() for v in table[["oof_macro_f1", "oof_macro_f1_low",
                                                                  "oof_macro_f1_high"]].to_numpy()]
    shown["weight"] = table.weight
    if "weight_mask" in table.columns and table.weight_mask.notna().all():
        for a in ATTRIBUTES:
            shown[a] = table[f"weight_{a}"]
    shown["OOF optimistic"] = np.where(table.oof_optimistic, "yes", "")
    notes = (["a specialist's macro F1 is of its attribute alone"] if "target" in table.columns else []) + (
        ["mask, gender, age: each model's weight per attribute"] if "mask" in shown.columns else [])
    log(f"models (OOF macro F1 alone [{LEVEL:.0%} interval], weight in the chosen blend)"
        + (f"\n({'; '.join(notes)})" if notes else "") + ":\n"
        + shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def optimistic_warning(table: pd.DataFrame, result: BlendResult) -> str | None:
    """Said when the chosen blend leans on models whose OOF rows were seen by their labellers."""
    weighted = table[table.oof_optimistic & (table.weight > 0)]
    if not len(weighted):
        return None
    chosen = result.chosen
    return (f"the chosen blend {chosen.fitted.recipe.name} gives weight to {len(weighted)} OOF-optimistic "
            f"model(s) ({', '.join(f'{r.name} {r.weight:.3f}' for r in weighted.itertuples())}) of "
            f"{', '.join(sorted(set(weighted.experiment)))}: trained on pseudo labels from models that saw every "
            "fold (pseudo.per_fold: false), so their OOF scores, these weights and the nested estimate "
            f"{chosen.nested.scores.macro_f1:.4f} are optimistic. For an honest estimate blend a per_fold: true "
            "round instead, or leave that experiment out.")


def _models_record(models: pd.DataFrame | None, result: BlendResult) -> dict:
    if models is None:
        return {}
    weighted = models[models.oof_optimistic & (models.weight > 0)]
    return {"models": {r.name: {"experiment": r.experiment, "model": r.model, "oof_macro_f1": round(r.oof_macro_f1, 5),
                                **({"target": r.target} if "target" in models.columns else {}),
                                "oof_optimistic": bool(r.oof_optimistic)} for r in models.itertuples()},
            "oof_optimistic_weighted": weighted.name.tolist(), "warning": optimistic_warning(models, result)}


def weights_record(result: BlendResult, inputs: BlendInputs, experiment: str, run: dict | None = None,
                   table: pd.DataFrame | None = None) -> dict:
    """weights.json; `run` adds what only the command knows (when, how long, the true score,
    the experiments blended); `table` (model_table) each model's experiment and OOF flag."""
    chosen, special = result.chosen, inputs.specialists
    names = inputs.oof.models + (special.models if special else ())
    targets = (ALL,) * len(inputs.oof.models) + (special.targets if special else ())
    return {"experiment": experiment, "rows_hash": inputs.oof.rows_hash, "metric": result.metric,
            **chosen.fitted.to_record(names, targets),
            "in_sample": chosen.in_sample.record(), "nested": chosen.nested.record(),
            "expected": expected_record(result),
            "versus": [comparison_record(c) for c in result.versus], "bootstrap": BOOTSTRAP,
            "choice": result.choice.record() if result.choice else None,
            "excluded": [{"model": e.model, "reason": e.reason} for e in inputs.excluded],
            # refit models (tasks/spec/refit.py) in the test logits: what the weights were fitted on instead
            "refit": inputs.test.refit.record() if inputs.test.refit is not None else None,
            **_models_record(table, result), **(run or {})}


def expected_record(result: BlendResult) -> dict:
    """weights.json's `expected`: the submission's expected macro F1 and what it assumes, or why
    there is none."""
    e, x = result.chosen.expected, result.expectation
    if e is None or x is None:
        return {"macro_f1": None, "why_none": "not estimated " + NO_EXPECTED}
    return {"macro_f1": round(e.estimate, 5), "interval": e.record(), **x.record()}


NO_EXPECTED = ("(it needs folds.repeats: 2 or more, in one experiment): the submission averages the fold "
               "models, so it usually scores above the nested estimate")


def write_blend(exp_dir: Path, result: BlendResult, inputs: BlendInputs, board: pd.DataFrame,
                run: dict | None = None, models: pd.DataFrame | None = None) -> Path:
    """All outputs into a staging folder, then swapped in whole: a failed run leaves the old ones."""
    target = exp_dir / "blend"
    with atomic_dir(target) as tmp:
        chosen, oof = result.chosen, inputs.oof
        record = weights_record(result, inputs, exp_dir.name, run, models)
        (tmp / "weights.json").write_text(json.dumps(record, indent=2))
        board.to_csv(tmp / "leaderboard.csv", index=False)
        if models is not None:
            models.to_csv(tmp / "models.csv", index=False)
        pd.DataFrame({"ImageID": inputs.test.image_ids, "ans": chosen.test_labels}).to_csv(
            tmp / "submission.csv", index=False)
        pd.DataFrame({"image_key": oof.image_key, "person": oof.person, "fold": oof.fold, "target": oof.target,
                      "in_sample": chosen.in_sample.labels, "nested": chosen.nested.labels}).to_parquet(
            tmp / "oof_predictions.parquet", index=False)
    return target


# The console's methods table, nested first and about 100 columns wide: blend/leaderboard.csv and
# the report hold every column (in-sample intervals, per-attribute F1, log loss).
BOARD_COLUMNS = (("nested_accuracy", "accuracy"), ("in_sample_macro_f1", "in-sample"), ("truth_macro_f1", "true"))


def print_board(board: pd.DataFrame, log: Log = to_stdout) -> None:
    """The leaderboard, best nested macro F1 first, as 'point [low, high]'."""
    width = max(len("method"), *(len(m) for m in board.method))
    shown = pd.DataFrame({"method".ljust(width): [m.ljust(width) for m in board.method]})
    shown[f"nested macro F1 [{LEVEL:.0%}]"] = [
        Interval(*v).text() for v in board[["nested_macro_f1", "nested_macro_f1_low", "nested_macro_f1_high"]].to_numpy()]
    if "expected_macro_f1" in board.columns and board.expected_macro_f1.notna().all():
        shown["expected"] = board.expected_macro_f1  # on new people, from the repeats
    for column, title in BOARD_COLUMNS:
        if column in board.columns:
            shown[title] = board[column]
    shown["chosen"] = np.where(board.chosen, "<-", "")
    log(f"methods, best nested macro F1 first [{LEVEL:.0%} interval over {RESAMPLES} resamples of people, predictions "
        "fixed]\n(accuracy: nested; in-sample: fitted and scored on the same rows, flatters; all in "
        "blend/leaderboard.csv):\n" + shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def comparison_line(c: Comparison) -> str:
    head = f"  versus {c.method} ({c.baseline}): "
    if c.difference is None:
        return head + f"the chosen method is {c.baseline} itself"
    if c.clearly_better:
        return head + f"clearly better, by {c.difference.text(signed=True)}"
    return head + f"not clearly better, {c.difference.text(signed=True)}"


def choice_line(choice: Choice | None, chosen: str) -> str | None:
    """Why the chosen method is not the top nested score, when it is not."""
    if choice is None or choice.top == chosen:
        return None
    return (f"  not the top nested score: {choice.top} is {choice.margin:.4f} higher, within the noise of the "
            f"difference ({choice.noise:.4f}, its person-bootstrap sd), so the simpler method is chosen "
            "(blend.choose=one_se)")


def expected_line(result: BlendResult) -> str:
    e, x = result.chosen.expected, result.expectation
    if e is None or x is None:
        return "  expected on new people: not estimated " + NO_EXPECTED
    return f"  expected on new people: macro F1 {e.text()} ({x.text()})"


def summary_lines(result: BlendResult) -> list[str]:
    """The chosen method's honest score, why it was chosen, and whether it beats each simpler
    baseline by more than chance."""
    chosen = result.chosen
    why = choice_line(result.choice, chosen.fitted.recipe.name)
    lines = [f"chosen: {chosen.fitted.recipe.name} (nested macro F1 {chosen.nested.macro_f1_interval.text()}, "
             f"in-sample {chosen.in_sample.macro_f1_interval.text()})", *([why] if why else []),
             expected_line(result), *map(comparison_line, result.versus)]
    if any(c.difference is not None for c in result.versus):
        lines.append(f"  (the chosen minus each in nested macro F1, paired: {DESCRIPTION})")
    return lines
