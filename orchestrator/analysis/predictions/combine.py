"""The fold models' logits of new photos through the blend, as the submission went through it.

Each model's logits are its fold models' mean (`results.model_logits`, as `load_test` makes the
test logits the blend is applied to), in the record's model order, and the fitted blend decides
(`fitting.predict`): weights, temperatures, offsets and per-attribute decoding as fitted. A model
the blend does not weigh keeps zero logits: weight 0 adds exactly nothing, and the arrays keep the
shape the submission's had.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orchestrator.analysis.ensembles import methods as ens
from orchestrator.analysis.ensembles.attributes import split_logits
from orchestrator.analysis.ensembles.fitting import FittedBlend, predict
from orchestrator.analysis.predictions.ensemble import Ensemble
from orchestrator.analysis.refit import combine_refit
from orchestrator.analysis.results import model_logits
from tasks.labels import ALL, NUM_CLASSES, target_width
from tasks.spec.refit import REFIT_FOLD


@dataclass(frozen=True)
class Blended:
    labels: np.ndarray  # (N,) classes 0..17
    probs: np.ndarray  # (N, 18): the blend's class probabilities (a hard vote: its weighted vote shares)


def per_model_logits(ensemble: Ensemble, logits: dict[str, np.ndarray], n: int) -> list[np.ndarray]:
    """Each blended model's (N, width) logits, the mean over its fold models in fold order; zeros
    for a model the blend does not weigh (18 wide, or a specialist's own width)."""
    out, combine = [], (ensemble.record.get("refit") or {}).get("combine", "average")
    for name, target in zip(ensemble.models, ensemble.targets):
        folds = [logits[m.key] for m in ensemble.members if m.model == name and m.fold != REFIT_FOLD]
        each = model_logits(np.stack(folds)) if folds else np.zeros((n, target_width(target)), np.float32)
        refit = [logits[m.key] for m in ensemble.members if m.model == name and m.fold == REFIT_FOLD]
        out.append(combine_refit(each, refit[0], combine) if refit else each)  # as the submission's (analysis.refit)
    return out


def stacked_logits(ensemble: Ensemble, logits: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, dict | None]:
    """(all-class models, N, 18), and each attribute's specialists' logits when the blend has
    any (`fitting.predict`'s `extra`), split as the blend split them (attributes.split_logits)."""
    each = per_model_logits(ensemble, logits, n)
    if all(t == ALL for t in ensemble.targets):
        return (np.stack(each) if each else np.zeros((0, n, NUM_CLASSES), np.float32)), None
    return split_logits(ensemble.targets, each)


def vote_shares(fitted: FittedBlend, logits: np.ndarray) -> np.ndarray:
    """A hard vote's (N, 18) share of the weighted votes each class got."""
    used = fitted.weights > 0
    return ens.blend_probs(ens.one_hot_votes(logits[used]), fitted.weights[used] / fitted.weights[used].sum())


def blend_logits(ensemble: Ensemble, logits: dict[str, np.ndarray], n: int) -> Blended:
    stacked, extra = stacked_logits(ensemble, logits, n)
    out = predict(ensemble.fitted, stacked, extra)
    probs = out.probs if out.probs is not None else vote_shares(ensemble.fitted, stacked)
    return Blended(np.asarray(out.labels, np.int64), np.asarray(probs, np.float32))
