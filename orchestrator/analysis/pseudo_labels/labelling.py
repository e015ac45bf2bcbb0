"""Pseudo labels for a second round, per fold so that its OOF stays honest.

For `per_fold: true` the fold-k labels come only from round 1's fold-k models (trained on the
other folds' people), blended by round 1's chosen method refitted without fold k's OOF rows:
nothing that learned from fold k's people, or from their labels, reaches them. `per_fold:
false` is the usual practice: one set from the full round-1 blend (the submission's own
probabilities), the same for every fold, whose OOF scores are therefore optimistic.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.analysis.ensembles import methods as ens
from orchestrator.analysis.ensembles.fitting import FittedBlend, fit_recipe, predict
from orchestrator.analysis.ensembles.recipes import EQUAL, Recipe, recipe_named
from orchestrator.analysis.pseudo_labels.calibration import class_thresholds, select_ranked
from orchestrator.analysis.pseudo_labels.outputs import plot_pseudo, write_sets
from orchestrator.analysis.results import BlendInputs, load_blend_inputs
from orchestrator.analysis.results_folder import ResultsError, load_experiment
from tasks.labels import NUM_CLASSES
from tasks.logits import read_logits
from tasks.pseudo.fold_sets import PseudoError, PseudoSet, pseudo_hash, pseudo_path
from tasks.pseudo.rows import check_round1_rows
from tasks.spec.experiment import Experiment
from tasks.spec.pseudo import PerClassSpec
from tasks.user_files import InputError, read_json


@dataclass(frozen=True)
class Round1:
    """The source experiment as pseudo labelling needs it."""

    exp_dir: Path
    spec: Experiment
    inputs: BlendInputs  # OOF rows and fold-mean test logits of its complete models
    fold_test: np.ndarray  # (M, K, T, C) each fold model's test logits, rows in `eval_ids` order
    recipe: Recipe  # the blend's chosen method, or the equal soft vote without a blend
    from_blend: bool
    why_equal: str = ""  # why the equal soft vote although round 1 has a blend


@dataclass(frozen=True)
class PseudoBuild:
    sets: dict[int, PseudoSet]  # per fold
    hashes: dict[int, str]  # per fold: part of its jobs' identity
    summary: dict  # pseudo/summary.json


def load_round1(spec: Experiment, folds: pd.DataFrame, eval_ids: np.ndarray) -> Round1:
    """The source's logits and blend method, checked against this experiment's folds and eval set."""
    source = check_source(spec)
    try:
        # Repeat 0 alone: another repeat's fold models trained on fold k's people, and through
        # the weights fitted on their rows they would reach fold k's labels.
        src_spec = load_experiment(source)
        src_spec = src_spec.model_copy(update={"folds": src_spec.folds.model_copy(update={"repeats": 1})})
        inputs = load_blend_inputs(source, src_spec)
    except ResultsError as err:
        raise PseudoError(f"pseudo.source: {err}") from None
    check_same_rows(spec, folds, eval_ids, src_spec, inputs)
    if spec.pseudo.per_fold and src_spec.oof_optimistic:
        raise PseudoError(f"pseudo.source: {source} learned labels from a full blend (its pseudo.per_fold is false), "
                          "so its fold-k models saw fold k's people through them: per-fold labels from it would not "
                          "be honest. Use an honest round (per_fold: true) as the source, or set per_fold: false")
    recipe, from_blend = chosen_recipe(source, src_spec, inputs)
    why = ""
    if recipe.per_attribute_weights:  # it weighs specialists, whose fold models' labels are not read here
        why = (f"round 1's blend chose {recipe.name}, which weighs attribute specialists; pseudo labels use its "
               "all-class models")
        recipe, from_blend = EQUAL, False
    fold_test = per_fold_test(source / "test.parquet", inputs.test.models, src_spec.folds.n_splits, eval_ids)
    return Round1(source, src_spec, inputs, fold_test, recipe, from_blend, why)


def check_source(spec: Experiment) -> Path:
    """The source folder, if it can be round 1 at all: checked before anything is prepared."""
    source = spec.pseudo.source
    if source.resolve() == spec.out_dir.resolve():
        raise PseudoError(f"pseudo.source: {source} is this experiment's own results folder; a second round needs "
                          "its own name (--set name=...)")
    if not (source / "spec.yaml").is_file():
        raise PseudoError(f"pseudo.source: {source} is not an experiment's results folder (no spec.yaml); give "
                          "the results/<name> folder of a finished round-1 run")
    missing = [name for name in ("oof.parquet", "test.parquet") if not (source / name).is_file()]
    if missing:
        raise PseudoError(f"pseudo.source: {source} has no {' or '.join(missing)}: round 1 has not finished; run it "
                          f"(python -m orchestrator.run) first")
    return source


def check_same_rows(spec: Experiment, folds: pd.DataFrame, eval_ids: np.ndarray, src_spec: Experiment,
                    inputs: BlendInputs) -> None:
    """Per-fold labels mean fold k is the same people in both rounds; and both rounds label the
    same eval photos (checked on the logits read, as prepare checked round 1's files)."""
    check_round1_rows(spec, src_spec.folds.n_splits, folds.set_index("image_key")["fold"],
                      pd.Series(inputs.oof.fold, index=inputs.oof.image_key), list(eval_ids),
                      list(inputs.test.image_ids))


def chosen_recipe(source: Path, src_spec: Experiment, inputs: BlendInputs) -> tuple[Recipe, bool]:
    """Round 1's chosen blend method (from blend/weights.json), or the equal soft vote."""
    path = source / "blend" / "weights.json"
    if not path.is_file():
        return EQUAL, False
    fix = (f"blend round 1 again (python -m orchestrator.blend --results {source}) or remove its blend/ folder "
           "to label by the equal soft vote")
    try:
        record = read_json(path, "round 1's blend record", fix)
    except InputError as err:
        raise PseudoError(str(err)) from None
    if not isinstance(record, dict) or not {"method", "metric"} <= set(record):
        raise PseudoError(f"{path}: round 1's blend record is not a blend record (no method and metric); {fix}")
    names = inputs.oof.models + (inputs.specialists.models if inputs.specialists else ())
    if sorted(record.get("weights", {})) != sorted(names) or record.get("rows_hash") != inputs.oof.rows_hash:
        raise PseudoError(f"{path}: blended other models or rows than {source} now holds "
                          f"({sorted(record.get('weights', {}))} vs {sorted(inputs.oof.models)}); blend round 1 "
                          f"again (python -m orchestrator.blend --results {source}) or remove its blend/ folder")
    recipe = recipe_named(record["method"], src_spec.blend.model_copy(update={"metric": record["metric"]}),
                          inputs.specialists is not None)
    if recipe is None:
        raise PseudoError(f"{path}: method {record['method']!r} is not one this version plans; blend round 1 again")
    return recipe, True


def per_fold_test(path: Path, models: tuple[str, ...], n_splits: int, eval_ids: np.ndarray) -> np.ndarray:
    """(M, K, T, C) test logits of every fold model (load_test has checked they are complete)."""
    frame, logits, _ = read_logits(path)
    where = pd.Index(eval_ids).get_indexer(frame.image_key)
    out = np.zeros((len(models), n_splits, len(eval_ids), NUM_CLASSES), np.float32)
    for m, model in enumerate(models):
        at = np.flatnonzero(frame.model.to_numpy() == model)
        out[m, frame.fold.to_numpy()[at], where[at]] = logits[at]
    return out


def fitted_without(r1: Round1, fold: int | None) -> FittedBlend:
    """The method fitted on OOF rows outside `fold` (all rows for None)."""
    oof = r1.inputs.oof
    keep = np.ones(len(oof.fold), bool) if fold is None else oof.fold != fold
    return fit_recipe(r1.recipe, np.compress(keep, oof.logits, axis=1), oof.target[keep], r1.spec.blend, {})


def blended(fitted: FittedBlend, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of the blend on (M, T, C) logits; a hard vote's labels come with
    the soft blend of its weights for confidence."""
    pred = predict(fitted, logits)
    probs = pred.probs
    if probs is None:
        probs = ens.blend_probs(ens.model_probs(logits, fitted.temperatures), fitted.weights)
    return pred.labels, probs


def fold_labels(r1: Round1, fitted: FittedBlend, fold: int, per_fold: bool) -> tuple[np.ndarray, np.ndarray]:
    """Fold k's eval-photo labels: per fold, round 1's fold-k models under `fitted` (the method
    refitted without fold k); else every fold model's mean under the full blend."""
    return blended(fitted, r1.fold_test[:, fold] if per_fold else r1.inputs.test.logits)


def select(labels: np.ndarray, probs: np.ndarray, eval_ids: np.ndarray, threshold: float, cap: int) -> PseudoSet:
    """Photos whose label has probability >= threshold; at most `cap`, the most confident first."""
    confidence = probs[np.arange(len(labels)), labels].astype(np.float32)
    eligible = np.flatnonzero(confidence >= threshold)
    order = eligible[np.lexsort((eval_ids[eligible].astype(str), -confidence[eligible]))][:cap]
    order = np.sort(order)  # eval order: the file reads like info.csv
    return PseudoSet(eval_ids[order].astype(object), labels[order].astype(np.int64), confidence[order],
                     probs[order].astype(np.float32))


def calibration_rows(r1: Round1, fitted: FittedBlend, fold: int, per_fold: bool
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, probabilities, given labels) of round 1's OOF rows that may set fold k's
    per-class thresholds: per fold, the other folds' rows under the blend fitted on them (fold
    k's people's labels never choose which photos fold k learns); else every row."""
    oof = r1.inputs.oof
    keep = oof.fold != fold if per_fold else np.ones(len(oof.fold), bool)
    labels, probs = blended(fitted, np.compress(keep, oof.logits, axis=1))
    return labels, probs, oof.target[keep]


def select_per_class(calibration: tuple[np.ndarray, np.ndarray, np.ndarray], per_class: PerClassSpec,
                     labels: np.ndarray, probs: np.ndarray, eval_ids: np.ndarray, cap: int) -> tuple[PseudoSet, np.ndarray]:
    """pseudo.per_class: each class's eval photos at or above its own calibrated threshold (the
    set, and the thresholds)."""
    thresholds = class_thresholds(*calibration, per_class.precision, per_class.min_rows)
    order = np.sort(select_ranked(labels, probs, thresholds, cap))  # eval order: the file reads like info.csv
    confidence = probs[np.arange(len(labels)), labels].astype(np.float32)
    return PseudoSet(eval_ids[order].astype(object), labels[order].astype(np.int64), confidence[order],
                     probs[order].astype(np.float32)), thresholds


def fold_set(r1: Round1, fitted: FittedBlend, fold: int, p, labels: np.ndarray, probs: np.ndarray,
             eval_ids: np.ndarray, cap: int) -> tuple[PseudoSet, np.ndarray]:
    """Fold k's rows and the per-class bar they cleared (one global threshold, or per class)."""
    if p.per_class is None:
        return select(labels, probs, eval_ids, p.threshold, cap), np.full(NUM_CLASSES, p.threshold)
    return select_per_class(calibration_rows(r1, fitted, fold, p.per_fold), p.per_class, labels, probs, eval_ids,
                            cap)


def fold_cap(folds: pd.DataFrame, fold: int, max_share: float) -> int:
    """Most pseudo rows that keep them at `max_share` of the fold's training set."""
    labelled = int((folds["fold"] != fold).sum())
    return int(np.floor(max_share / (1 - max_share) * labelled + 1e-9))


def build_pseudo(spec: Experiment, folds: pd.DataFrame, eval_ids: np.ndarray, write: bool = True,
                 log=print) -> PseudoBuild:
    """Every fold's set and its hash; with `write`, results/<name>/pseudo/fold<k>.parquet and
    summary.json, each replaced whole."""
    p, n_splits = spec.pseudo, spec.folds.n_splits
    r1 = load_round1(spec, folds, eval_ids)
    log(describe_source(r1, p.per_fold))
    sets, per_fold, confidence = {}, {}, {}
    shared = None if p.per_fold else fitted_without(r1, None)  # the full blend, the same for every fold
    for k in range(n_splits):
        fitted = shared or fitted_without(r1, k)  # fitted once per fold: its labels and its calibration
        labels, probs = fold_labels(r1, fitted, k, p.per_fold)
        cap = fold_cap(folds, k, p.max_share)
        confidence[k] = probs[np.arange(len(labels)), labels]
        sets[k], bar = fold_set(r1, fitted, k, p, labels, probs, eval_ids, cap)
        eligible = int((confidence[k] >= bar[labels]).sum())
        classes = np.bincount(sets[k].label, minlength=NUM_CLASSES)
        per_fold[k] = {"rows": len(sets[k]), "eligible": eligible, "cap": cap, "hash": pseudo_hash(sets[k], p),
                       "classes": classes.tolist(),
                       **({"thresholds": [None if np.isinf(t) else round(float(t), 4) for t in bar]}
                          if p.per_class else {})}
        rule = (f"probability >= {p.threshold:g}" if p.per_class is None else
                f"at its class's threshold for precision {p.per_class.precision:g}, {np.isfinite(bar).sum()} of "
                f"{NUM_CLASSES} classes have one")
        log(f"  fold {k}: {len(sets[k])} of {len(eval_ids)} eval photos of {(classes > 0).sum()} classes ({rule}: "
            f"{eligible}{f', capped at {cap} = {p.max_share:.0%} of the training set' if eligible > cap else ''})"
            + (f" -> {pseudo_path(spec.out_dir, k)}" if write else ""))
    summary = {"source": str(r1.exp_dir), "per_fold": p.per_fold, "oof_optimistic": not p.per_fold,
               "method": r1.recipe.name, "from_blend": r1.from_blend, "models": list(r1.inputs.oof.models),
               "threshold": p.threshold, "per_class": p.per_class.model_dump() if p.per_class else None,
               "max_share": p.max_share, "soft": p.soft, "weight": p.weight,
               "eval_images": int(len(eval_ids)), "folds": {str(k): v for k, v in per_fold.items()}}
    if write:
        write_sets(spec.out_dir, sets, summary)
        plot_pseudo(spec.out_dir / "pseudo" / "pseudo.png", confidence, sets, summary)
        log(f"  {spec.out_dir / 'pseudo' / 'summary.json'}, pseudo.png")
    return PseudoBuild(sets, {k: v["hash"] for k, v in per_fold.items()}, summary)


def describe_source(r1: Round1, per_fold: bool) -> str:
    how = (f"round 1's chosen blend {r1.recipe.name}" if r1.from_blend
           else f"the equal soft vote ({r1.why_equal or str(r1.exp_dir / 'blend') + ' does not exist'})")
    models = ", ".join(r1.inputs.oof.models)
    if per_fold:
        return (f"pseudo labels from {r1.exp_dir} ({models}), per fold: fold k's labels come only from round 1's "
                f"fold-k models, {how} refitted without fold k's OOF rows")
    return (f"pseudo labels from {r1.exp_dir} ({models}): one set from the full round-1 blend ({how}) for every fold; "
            "these models' OOF scores will be optimistic (per_fold: false)")
