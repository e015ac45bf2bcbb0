"""The chosen ensemble of a results folder: its fitted blend (blend/weights.json, read back by
`FittedBlend.from_record`) and the fold models of every model it weighs.

The fold models are the experiment's planned jobs (`results_folder.planned_jobs_as_run`, the
reader every command names jobs by), never a glob of folders: jobs of changed settings are not
taken, and more fold models per model (repeats) come in as the reader returns them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from orchestrator.analysis.ensembles.fitting import BlendRecordError, FittedBlend
from orchestrator.analysis.ensembles.pooled import is_blend_folder, pooled_name, recorded_dirs
from orchestrator.analysis.results_folder import (
    PREFER_BLENDED,
    ResultsError,
    find_experiment,
    load_experiment,
    planned_jobs_as_run,
    refits_as_run,
)
from tasks.log import Log, silent
from tasks.serving.images import Decoding
from tasks.serving.members import FoldMember, ModelInput
from tasks.spec.refit import REFIT_FOLD


class PredictError(ResultsError):
    """An ensemble that cannot predict (no blend, missing fold weights), or photos it cannot use."""


@dataclass(frozen=True)
class Ensemble:
    folder: Path  # the results folder (or exported folder) whose blend this is
    record: dict  # the fitted blend as weights.json keeps it (FittedBlend.to_record's keys)
    models: tuple[str, ...]  # every model of the blend, in the record's order (the order it was fitted in)
    fitted: FittedBlend
    members: tuple[FoldMember, ...]  # the fold models of the models the blend weighs

    @property
    def method(self) -> str:
        return self.fitted.recipe.name

    @property
    def targets(self) -> tuple[str, ...]:
        """What each model predicts (`train.target`): all 18 classes unless the record says otherwise."""
        saved = self.record.get("targets") or {}
        return tuple(saved.get(m, "all") for m in self.models)

    def weighted(self) -> tuple[str, ...]:
        return tuple(m for m in self.models if model_weights(self.record).get(m, 0) > 0)


def model_weights(record: dict) -> dict[str, float]:
    """Each model's weight by name, as weights.json keeps it (a specialist's is 0 in an 18-class
    method, its mean over the attributes in a per-attribute one): `fitted.weights` covers only
    the models the method was fitted on."""
    return {m: float(w) for m, w in (record.get("weights") or {}).items()}


def fitted_blend(record: dict, where: Path) -> tuple[tuple[str, ...], FittedBlend]:
    models = tuple(record.get("weights") or {})
    try:
        return models, FittedBlend.from_record(record, models)
    except BlendRecordError as err:
        raise PredictError(f"{where}: {err}; run `python -m orchestrator.blend` again") from None


def load_ensemble(results: Path | None, log: Log = silent) -> Ensemble:
    """The blend of `results` (an experiment or a `blend --out` folder; default: the experiment
    blended last) with its fold models; PredictError if it has no blend or a weighed model lacks weights."""
    folder = results if is_blend_folder(results) else find_experiment(results, prefer=PREFER_BLENDED, log=log)
    path = folder / "blend" / "weights.json"
    if not path.is_file():
        raise PredictError(f"{folder}: no blend yet ({path} is missing); run `python -m orchestrator.blend "
                           f"--results {folder}` first")
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PredictError(f"{path}: cannot be read ({type(err).__name__}); run `python -m orchestrator.blend` again"
                           ) from None
    models, fitted = fitted_blend(record, path)
    dirs = recorded_dirs(folder, record)
    _check_current(dirs[0], record, path)
    weight = model_weights(record)
    refit = set((record.get("refit") or {}).get("models") or ())
    members = [m for d in dirs for m in _members_of(d, len(dirs) > 1, weight) + _refit_members(d, len(dirs) > 1, refit)]
    for name in (m for m in models if weight[m] > 0):
        if not any(m.model == name for m in members):
            raise PredictError(f"{path}: weighs model {name}, but its experiment's spec plans no job of it; "
                               "run `python -m orchestrator.blend` again")
    return Ensemble(folder, record, models, fitted, tuple(members))


def _check_current(exp_dir: Path, record: dict, path: Path) -> None:
    """The blend was fitted on the logits of the jobs the manifest names now."""
    try:
        rows = json.loads((exp_dir / "manifest.json").read_text()).get("rows_hash")
    except (OSError, ValueError):
        return  # planned_jobs_as_run names the missing manifest
    if record.get("rows_hash") and rows and record["rows_hash"] != rows:
        raise PredictError(f"{path} was fitted on logits of other data or folds (rows_hash {record['rows_hash']}, "
                           f"{exp_dir / 'manifest.json'} says {rows}); run `python -m orchestrator.blend` again")


def _members_of(exp_dir: Path, several: bool, weight: dict[str, float]) -> list[FoldMember]:
    spec = load_experiment(exp_dir)
    name, decoding, members = exp_dir.resolve().name, Decoding.of(spec.data), []
    for job in planned_jobs_as_run(exp_dir):
        model = pooled_name(name, job.model, several)
        if weight.get(model, 0) <= 0:
            continue  # a model the blend does not weigh changes no answer: not run
        weights = job.out_dir / "best.pt"
        if not (job.out_dir / "result.json").is_file():
            raise PredictError(f"{job.out_dir}: {model} fold {job.fold} has not finished (no result.json), yet the "
                               f"blend weighs {model}; run the experiment to finish it, then blend again")
        if not weights.is_file() or weights.stat().st_size == 0:
            raise PredictError(f"{weights}: fold weights missing ({model} fold {job.fold}); copy the job's best.pt "
                               f"back, or run the experiment again (python -m orchestrator.run {exp_dir}/spec.yaml)")
        train = spec.train_for(spec.model(job.model))
        members.append(FoldMember(f"{name}/{job.job_id}", model, job.fold, weights, decoding, ModelInput.of(train),
                                  spec, job.model))
    return members


def _refit_members(exp_dir: Path, several: bool, wanted: set[str]) -> list[FoldMember]:
    """The refit models (fold REFIT_FOLD) whose test logits the blend's submission combined in."""
    if not wanted:
        return []
    spec = load_experiment(exp_dir)
    name, decoding, members = exp_dir.resolve().name, Decoding.of(spec.data), []
    for refit in refits_as_run(exp_dir):
        model = pooled_name(name, refit.model, several)
        if model not in wanted:
            continue
        weights = refit.out_dir / "best.pt"
        if not weights.is_file() or weights.stat().st_size == 0:
            raise PredictError(f"{weights}: refit weights missing ({model}), yet the blend's submission used them; "
                               f"run the experiment again (python -m orchestrator.run {exp_dir}/spec.yaml)")
        train = spec.train_for(spec.model(refit.model))
        members.append(FoldMember(f"{name}/{refit.job_id}", model, REFIT_FOLD, weights, decoding,
                                  ModelInput.of(train), spec, refit.model))
    return members
