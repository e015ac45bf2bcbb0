"""Each pooled round's own chosen blend, scored by the pool's own estimate: does pooling pay?

A pool's nested estimate can only be set beside a round's if both come from the same procedure
on the same rows: the round's own blend/weights.json was fitted with that round's spec (and its
report may be gone, replaced by the pool's). So each round's chosen method (the one its own
blend/weights.json names; without one, chosen afresh from every planned method as `blend` would)
is fitted again on that round's models alone, in the pool's nested person folds, with the pool's
blend settings, and scored on the same person resamples; the pool's chosen method minus it is a
paired difference.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from orchestrator.analysis.ensembles.fitting import BlendResult, fit_blend
from orchestrator.analysis.ensembles.pooled import Pool, Source
from orchestrator.analysis.ensembles.recipes import Recipe, recipe_by_name
from orchestrator.analysis.ensembles.uncertainty import DESCRIPTION, LEVEL, Interval, PersonBootstrap
from orchestrator.analysis.results import BlendInputs, EvalLogits, OofLogits
from tasks.log import Log, silent, to_stdout
from tasks.metrics import score
from tasks.spec.experiment import BlendSpec

OWN = "its blend/weights.json"
AFRESH = "chosen afresh"  # the round has no blend of its own (or only a pooled one)


@dataclass(frozen=True)
class RoundEstimate:
    experiment: str
    method: str  # the round's chosen method
    method_from: str  # OWN or AFRESH
    models: int
    nested: Interval  # nested macro F1 of that method on the round's models alone
    pool_minus_round: Interval  # the pool's chosen minus this, nested, paired by person
    truth_macro_f1: float | None  # its submission against blend --truth's answers

    def record(self) -> dict:
        return {"experiment": self.experiment, "method": self.method, "method_from": self.method_from,
                "models": self.models, "nested_macro_f1": round(self.nested.estimate, 5),
                "nested_macro_f1_interval": self.nested.record(),
                "pool_minus_round": {"difference": round(self.pool_minus_round.estimate, 5),
                                     "interval": self.pool_minus_round.record(),
                                     "clearly_better": self.pool_minus_round.low > 0,
                                     "clearly_worse": self.pool_minus_round.high < 0},
                "truth_macro_f1": None if self.truth_macro_f1 is None else round(self.truth_macro_f1, 5)}


def own_recipe(source: Source) -> Recipe | None:
    """The method the round's own blend chose; None without one, or when its blend/ holds a pool's."""
    path = source.exp_dir / "blend" / "weights.json"
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return None  # an unreadable record is no evidence of a choice: choose afresh
    if len(record.get("experiments") or []) > 1:
        return None
    return recipe_by_name(str(record.get("method")))


def round_inputs(pool: Pool, experiment: str) -> BlendInputs:
    """The pool's inputs restricted to one experiment's models (same rows, same order), its
    specialists too."""
    o, t, special = pool.inputs.oof, pool.inputs.test, pool.inputs.specialists
    keep = [i for i, m in enumerate(pool.models[:len(o.models)]) if m.experiment == experiment]
    names = tuple(o.models[i] for i in keep)
    oof = OofLogits(names, o.logits[keep], o.image_key, o.person, o.fold, o.target, o.rows_hash, ())
    own = special.only([m.name for m in pool.models if m.experiment == experiment]) if special else None
    return BlendInputs(oof, EvalLogits(names, t.logits[keep], t.image_ids, t.rows_hash, ()), (), own)


def round_estimates(pool: Pool, result: BlendResult, spec: BlendSpec, truth: np.ndarray | None = None,
                    log: Log = to_stdout) -> tuple[RoundEstimate, ...]:
    """Each round's own chosen blend beside the pool's (nothing for one experiment)."""
    if len(pool.sources) < 2:
        return ()
    oof, pooled = pool.inputs.oof, result.chosen
    boot = PersonBootstrap.draw(oof.target, oof.person)  # the same resamples the pool was scored on
    out = []
    for source in pool.sources:
        inputs = round_inputs(pool, source.name)
        if not inputs.oof.models:
            log(f"  {source.name} alone: no complete models, left out of the comparison")
            continue
        start, recipe = time.perf_counter(), own_recipe(source)
        chosen = fit_blend(inputs, spec, silent, (recipe,) if recipe else None).chosen
        out.append(RoundEstimate(source.name, chosen.fitted.recipe.name, OWN if recipe else AFRESH,
                                 len(inputs.oof.models), chosen.nested.macro_f1_interval,
                                 boot.difference(pooled.nested.labels, chosen.nested.labels),
                                 None if truth is None else score(truth, chosen.test_labels).macro_f1))
        log(f"  {source.name} alone: {chosen.fitted.recipe.name} ({OWN if recipe else AFRESH}) fitted in the "
            f"same nested folds on its {len(inputs.oof.models)} models ({time.perf_counter() - start:.1f}s)")
    return tuple(out)


def round_lines(estimates: tuple[RoundEstimate, ...], result: BlendResult, truth_macro_f1: float | None) -> list[str]:
    """The console's comparison: the pool's chosen blend and each round's, by the same nested estimate."""
    if not estimates:
        return []
    pooled = result.chosen
    width = max(len("pool"), *(len(e.experiment) for e in estimates))
    method_width = max(len(pooled.fitted.recipe.name), *(len(e.method) for e in estimates))

    def row(name: str, method: str, nested: str, versus: str, true: str) -> str:
        return f"  {name:<{width}}  {method:<{method_width}}  {nested:<21}  {versus:<23}  {true}".rstrip()

    lines = ["each round's own chosen blend, fitted on its models alone in the same nested folds, rows and people",
             f"(pool minus it: paired, {DESCRIPTION}):",
             row("", "method", f"nested macro F1 [{LEVEL:.0%}]", "pool minus it", "true" if truth_macro_f1 else ""),
             row("pool", pooled.fitted.recipe.name, pooled.nested.macro_f1_interval.text(), "",
                 "" if truth_macro_f1 is None else f"{truth_macro_f1:.4f}")]
    lines += [row(e.experiment, e.method, e.nested.text(), e.pool_minus_round.text(signed=True),
                  "" if e.truth_macro_f1 is None else f"{e.truth_macro_f1:.4f}") for e in estimates]
    worse = [e.experiment for e in estimates if e.pool_minus_round.high < 0]
    if worse:
        lines.append(f"by this estimate the pool is clearly worse than {', '.join(worse)} alone: that round's own "
                     "blend is the better bet")
    return lines
