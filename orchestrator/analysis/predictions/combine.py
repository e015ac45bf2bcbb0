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
from orchestrator.analysis.ensembles.fitting import FittedBlend, predict
from orchestrator.analysis.predictions.ensemble import Ensemble
from orchestrator.analysis.results import model_logits
from tasks.labels import NUM_CLASSES


@dataclass(frozen=True)
class Blended:
    labels: np.ndarray  # (N,) classes 0..17
    probs: np.ndarray  # (N, 18): the blend's class probabilities (a hard vote: its weighted vote shares)


def stacked_logits(ensemble: Ensemble, logits: dict[str, np.ndarray], n: int) -> np.ndarray:
    """(models, N, 18): each blended model's logits, the mean over its fold models in fold order."""
    out = np.zeros((len(ensemble.models), n, NUM_CLASSES), np.float32)
    for i, name in enumerate(ensemble.models):
        folds = [logits[m.key] for m in ensemble.members if m.model == name]
        if folds:
            out[i] = model_logits(np.stack(folds))
    return out


def vote_shares(fitted: FittedBlend, logits: np.ndarray) -> np.ndarray:
    """A hard vote's (N, 18) share of the weighted votes each class got."""
    used = fitted.weights > 0
    return ens.blend_probs(ens.one_hot_votes(logits[used]), fitted.weights[used] / fitted.weights[used].sum())


def blend_logits(ensemble: Ensemble, logits: dict[str, np.ndarray], n: int) -> Blended:
    stacked = stacked_logits(ensemble, logits, n)
    out = predict(ensemble.fitted, stacked)
    probs = out.probs if out.probs is not None else vote_shares(ensemble.fitted, stacked)
    return Blended(np.asarray(out.labels, np.int64), np.asarray(probs, np.float32))
