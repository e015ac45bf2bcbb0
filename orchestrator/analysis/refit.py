"""Refit models' test logits (test_refit.parquet, tasks/spec/refit.py) into the blend's test logits.

A refit model trained on every training person, so it has no OOF rows: the blend fits on the
fold models' OOF rows as ever, and only the test logits it applies that fit to change. With
`combine: replace` (the default), a model's test logits are its refit model's alone; with
`average`, the mean of its fold models' mean and its refit model (half and half: the refit model
saw K/(K-1) times the people of each fold model). Logits, not probabilities, as the fold mean is
(results.model_logits), so a temperature fitted on OOF rows applies alike.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from orchestrator.analysis.results_folder import ResultsError
from tasks.labels import ALL
from tasks.log import Log
from tasks.logits import REFIT_FILE, LogitsError, read_logits
from tasks.spec.experiment import Experiment
from tasks.spec.refit import refit_models


@dataclass(frozen=True)
class RefitUse:
    """Which models' test logits include a refit model, and how."""

    models: tuple[str, ...]
    combine: str  # "average" or "replace"
    missing: tuple[str, ...] = ()  # asked for by refit.models, but no refit logits: fold mean alone

    def record(self) -> dict:
        return {"models": list(self.models), "combine": self.combine, "missing": list(self.missing),
                "fitted_on": "the fold models' OOF rows; refit models have none, so no score is of them"}

    def line(self) -> str:
        how = ("averaged half and half with the fold models' mean" if self.combine == "average"
               else "replacing the fold models' mean")
        text = f"refit models in the test logits of {', '.join(self.models)} ({how}); weights fitted on fold OOF"
        return text + (f"; no refit logits for {', '.join(self.missing)}: fold mean alone" if self.missing else "")


def combine_refit(fold_mean: np.ndarray, refit: np.ndarray, combine: str) -> np.ndarray:
    """One model's test logits from its fold models' mean and its refit model's logits."""
    if combine == "replace":
        return np.asarray(refit, np.float32)
    return ((np.asarray(fold_mean, np.float32) + np.asarray(refit, np.float32)) / 2).astype(np.float32)


def read_refit_logits(exp_dir: Path, image_ids: np.ndarray, rows_hash: str) -> dict[str, np.ndarray]:
    """Each refit model's (T, 18) test logits in eval order, from `exp_dir`/test_refit.parquet."""
    path = exp_dir / REFIT_FILE
    if not path.is_file():
        return {}
    try:
        frame, logits, meta = read_logits(path)
    except (LogitsError, OSError, ValueError) as err:
        raise ResultsError(f"{path}: cannot be read as maskfold logits ({err}); re-run "
                           "`python -m orchestrator.run` to gather the refit jobs again") from None
    again = "re-run `python -m orchestrator.run` to gather the refit jobs again"
    if meta.rows_hash != rows_hash or meta.target != ALL:
        raise ResultsError(f"{path}: made for other data or folds (rows hash {meta.rows_hash}, not {rows_hash}); {again}")
    out = {}
    for model, at in frame.groupby("model", sort=True).indices.items():
        if list(frame.image_key.iloc[at]) != list(image_ids):
            raise ResultsError(f"{path}: the refit logits of {model} do not cover eval/info.csv in order; {again}")
        if not np.isfinite(logits[at]).all():
            raise ResultsError(f"{path}: the refit logits of {model} hold NaN or infinite values; {again}")
        out[model] = logits[at]
    return out


def apply_refit(exp_dir: Path, spec: Experiment, test, log: Log):
    """`test` (results.EvalLogits) with each refit model combined in as `spec.refit.combine` says."""
    if spec.refit is None:
        return test
    refit = read_refit_logits(exp_dir, test.image_ids, test.rows_hash)
    wanted = [m for m in refit_models(spec.refit, {m.name: spec.train_for(m).target for m in spec.models})
              if m in test.models]
    used, missing = [m for m in wanted if m in refit], tuple(m for m in wanted if m not in refit)
    for name in missing:
        log(f"refit: no refit logits for {name!r} in {exp_dir / REFIT_FILE} (its refit job did not finish?): "
            "its fold models' mean alone")
    logits = test.logits.copy()
    for name in used:
        at = test.models.index(name)
        logits[at] = combine_refit(logits[at], refit[name], spec.refit.combine)
    return replace(test, logits=logits, refit=RefitUse(tuple(used), spec.refit.combine, missing) if used or missing
                   else None)
