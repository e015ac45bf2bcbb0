"""Load an experiment's gathered logits into per-model arrays, or say clearly why not.

A model whose OOF or test logits are incomplete (a failed job) is excluded with a
printed reason; anything that makes rows incomparable (schema, class count, duplicate
rows, two spec hashes, disagreeing labels, folds other than folds.parquet's) is a
ResultsError naming the file. OOF rows are checked against results/<exp>/folds.parquet, the
list of every training image: a gap all models share shows nowhere else.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from orchestrator.analysis.logits_checks import check_folds as _check_folds
from orchestrator.analysis.logits_checks import check_oof_keys as _check_oof_keys
from orchestrator.analysis.logits_checks import check_unique as _check_unique
from orchestrator.analysis.results_folder import ResultsError, read_eval_ids
from tasks.data.folds import load_folds
from tasks.labels import ALL
from tasks.log import Log, to_stdout
from tasks.logits import LogitsError, gathered_name, read_logits
from tasks.spec.experiment import Experiment

if TYPE_CHECKING:
    from orchestrator.analysis.refit import RefitUse
    from orchestrator.analysis.specialists import Specialists


@dataclass(frozen=True)
class Exclusion:
    model: str
    reason: str


@dataclass(frozen=True)
class OofLogits:
    models: tuple[str, ...]
    logits: np.ndarray  # (M, N, C) float32, rows in `image_key` order
    image_key: np.ndarray  # (N,) "<person>/<stem>", sorted
    person: np.ndarray  # (N,)
    fold: np.ndarray  # (N,) fold in which the image was held out
    target: np.ndarray  # (N,) the 18-class label as given
    rows_hash: str
    excluded: tuple[Exclusion, ...]
    # (R, M, N, C) each repeat's held-out logits when folds.repeats > 1 (then `logits` is their
    # mean: R held-out predictions per row); None with one repeat.
    repeat_logits: np.ndarray | None = None


@dataclass(frozen=True)
class EvalLogits:
    models: tuple[str, ...]
    logits: np.ndarray  # (M, T, C) float32, each model's mean over its fold models (of every repeat)
    image_ids: np.ndarray  # (T,) eval ImageIDs in info.csv order
    rows_hash: str
    excluded: tuple[Exclusion, ...]
    refit: RefitUse | None = None  # models whose logits include a refit model (analysis.refit)


@dataclass(frozen=True)
class BlendInputs:
    oof: OofLogits  # only all-class models complete in both files, same order as test
    test: EvalLogits
    excluded: tuple[Exclusion, ...]
    # attribute specialists (train.target), complete in both; None without any in the spec
    specialists: Specialists | None = None


def _manifest_rows_hash(exp_dir: Path) -> str | None:
    """The hash every job's logits of the current prepare carry (None for older results)."""
    path = exp_dir / "manifest.json"
    return json.loads(path.read_text()).get("rows_hash") if path.exists() else None


def load_blend_inputs(exp_dir: Path, spec: Experiment, log: Log = to_stdout) -> BlendInputs:
    """OOF and test logits of every all-class model complete in both, or a ResultsError; with
    attribute specialists (train.target) in the spec, theirs too (analysis.specialists)."""
    targets = model_targets(spec)
    oof, test = load_target(exp_dir, spec, ALL, all_class_models(spec), log)
    if not oof.models:
        reasons = "; ".join(f"{e.model}: {e.reason}" for e in oof.excluded) or "no models"
        raise ResultsError(f"{exp_dir}: no model has complete OOF and test logits ({reasons}); "
                           f"re-run the failed jobs")
    if set(targets.values()) == {ALL}:
        return BlendInputs(oof, test, oof.excluded)
    from orchestrator.analysis.specialists import load_specialists

    specialists = load_specialists(exp_dir, spec, oof, targets, log)
    return BlendInputs(oof, test, oof.excluded + specialists.excluded, specialists)


def model_targets(spec: Experiment) -> dict[str, str]:
    """Each model's train.target by name, in spec order: "all", or a specialist's attribute."""
    return {m.name: spec.train_for(m).target for m in spec.models}


def all_class_models(spec: Experiment) -> list[str]:
    """The models of oof.parquet / test.parquet: those of all 18 classes (not specialists)."""
    return [m for m, t in model_targets(spec).items() if t == ALL]


def load_target(exp_dir: Path, spec: Experiment, target: str, expected: Sequence[str],
                log: Log = to_stdout) -> tuple[OofLogits, EvalLogits]:
    """The logits of the models of one target (gathered_name's files, every repeat), only those
    complete in both OOF and test (the others in `excluded`), or a ResultsError."""
    n_splits, oof_name, test_name = spec.folds.n_splits, gathered_name("oof", 0, target), gathered_name("test", 0, target)
    oof = load_oof(exp_dir / oof_name, n_splits, expected, exp_dir / "folds.parquet", log, target=target)
    test = load_test(exp_dir / test_name, n_splits, read_eval_ids(spec.data.root), expected, log, target=target)
    if oof.rows_hash != test.rows_hash:
        raise ResultsError(f"{exp_dir}/{oof_name} has rows_hash {oof.rows_hash} but {test_name} has "
                           f"{test.rows_hash}: the logits come from different data, folds or seeds; "
                           f"re-run the experiment so both come from one spec")
    expected_hash = _manifest_rows_hash(exp_dir)
    if expected_hash and oof.rows_hash != expected_hash:
        raise ResultsError(f"{exp_dir}/{oof_name} was made for other data or folds (spec hash {oof.rows_hash}, "
                           f"manifest.json says {expected_hash}); re-run `python -m orchestrator.run` to "
                           "gather the current jobs")
    if spec.folds.repeats > 1:
        from orchestrator.analysis.repeats import load_repeats

        oof, test = load_repeats(exp_dir, spec, oof, test, log, target, expected)
    both = [m for m in oof.models if m in test.models]
    excluded = _merge_exclusions(oof.excluded + test.excluded)
    pick_oof = [oof.models.index(m) for m in both]
    pick_test = [test.models.index(m) for m in both]
    oof = OofLogits(tuple(both), oof.logits[pick_oof], oof.image_key, oof.person, oof.fold,
                    oof.target, oof.rows_hash, excluded,
                    None if oof.repeat_logits is None else oof.repeat_logits[:, pick_oof])
    test = EvalLogits(tuple(both), test.logits[pick_test], test.image_ids, test.rows_hash, excluded)
    if target == ALL and spec.refit is not None:
        from orchestrator.analysis.refit import apply_refit

        test = apply_refit(exp_dir, spec, test, log)
    return oof, test


def _merge_exclusions(items: tuple[Exclusion, ...]) -> tuple[Exclusion, ...]:
    merged: dict[str, list[str]] = {}
    for item in items:
        merged.setdefault(item.model, []).append(item.reason)
    return tuple(Exclusion(m, "; ".join(r)) for m, r in merged.items())


def load_oof(path: Path, n_splits: int, expected: Sequence[str], folds_path: Path | None = None,
             log: Log = to_stdout, fold_column: str = "fold", target: str = ALL) -> OofLogits:
    """Per-model OOF logits aligned on training images; incomplete models excluded.

    With `folds_path` (results/<exp>/folds.parquet, if it exists) every model must cover
    its images, in its folds (`fold_column`: a repeat's, tasks.data.folds.fold_column).
    `target`: what the file must hold (a specialists' file: their attribute's logits).
    """
    file = _read(path, "oof", target)
    frame = file.frame
    _check_oof_keys(frame, path, n_splits)
    folds = _read_folds(folds_path, fold_column) if folds_path is not None and folds_path.is_file() else None
    if folds is not None:
        _check_against_folds(frame, path, folds, folds_path)
    rows = frame.drop_duplicates("image_key").sort_values("image_key")
    keys = pd.Index(rows.image_key)
    complete, excluded = {}, []
    for model, at in _by_model(frame, expected).items():
        reason = _model_gap(frame.iloc[at], len(keys), n_splits, folds)
        if reason:
            excluded.append(Exclusion(model, reason))
        else:
            complete[model] = at
    _log_exclusions(excluded, log)
    stack = np.empty((len(complete), len(keys), file.logits.shape[1]), np.float32)
    for m, at in enumerate(complete.values()):
        stack[m, keys.get_indexer(frame.image_key.iloc[at])] = file.logits[at]
    return OofLogits(tuple(complete), stack, keys.to_numpy(dtype=object), rows.person.to_numpy(dtype=object),
                     rows.fold.to_numpy(np.int64), rows.target.to_numpy(np.int64), file.rows_hash, tuple(excluded))


def _read_folds(path: Path, column: str = "fold") -> pd.DataFrame:
    try:
        folds, _ = load_folds(path)
    except (pa.ArrowException, OSError) as err:
        raise ResultsError(f"{path}: cannot be read ({err}); run `python -m orchestrator.prepare` again") from None
    if column not in folds:
        raise ResultsError(f"{path} has no column {column!r} (folds.repeats changed since prepare?); "
                           "run `python -m orchestrator.run` again")
    return folds[["image_key", "person", column]].rename(columns={column: "fold"})


def _check_against_folds(frame: pd.DataFrame, path: Path, folds: pd.DataFrame, folds_path: Path) -> None:
    """Images, people and folds as folds.parquet has them (models agree: checked before)."""
    labels = frame.drop_duplicates("image_key")[["image_key", "person", "fold"]]
    merged = labels.merge(folds, on="image_key", how="left", suffixes=("", "_saved"), validate="one_to_one")
    stray = merged[merged.fold_saved.isna()]
    differs = (merged.fold != merged.fold_saved) | (merged.person != merged.person_saved)
    moved = merged[merged.fold_saved.notna() & differs]
    again = "re-run `python -m orchestrator.run` to gather the logits of the current folds again"
    if len(stray):
        raise ResultsError(f"{path}: {len(stray)} images are not in {folds_path}, e.g. {stray.image_key.iloc[0]}: "
                           f"logits of other data; {again}")
    if len(moved):
        row = moved.iloc[0]
        raise ResultsError(f"{path}: {len(moved)} images have another fold or person than in {folds_path}, e.g. "
                           f"{row.image_key}: fold {row.fold} (person {row.person}) in the OOF rows, fold "
                           f"{int(row.fold_saved)} (person {row.person_saved}) in folds.parquet; {again}")


def _model_gap(rows: pd.DataFrame, n_images: int, n_splits: int, folds: pd.DataFrame | None) -> str | None:
    if not len(rows):
        return "no OOF rows (job failed or not run)"
    gap = _oof_gap(rows, n_images, n_splits)
    if gap or folds is None:
        return gap
    # Rows every model lacks (one model, or all failed alike) show only against folds.parquet.
    missing = folds[~folds.image_key.isin(rows.image_key)]
    if not len(missing):
        return None
    people = missing.person.nunique()
    return (f"OOF lacks {len(missing)} of {len(folds)} images in folds.parquet ({people} "
            f"{'person' if people == 1 else 'people'}, e.g. {missing.image_key.iloc[0]})")


def load_test(path: Path, n_splits: int, eval_ids: np.ndarray, expected: Sequence[str],
              log: Log = to_stdout, target: str = ALL) -> EvalLogits:
    """Per-model test logits averaged over fold models, rows in eval order."""
    file = _read(path, "test", target)
    width = file.logits.shape[1]
    frame = file.frame
    _check_unique(frame, ["model", "fold", "image_key"], path)
    _check_folds(frame, path, n_splits)
    ids = pd.Index(eval_ids)
    where = ids.get_indexer(frame.image_key)
    if (where < 0).any():
        raise ResultsError(f"{path}: {(where < 0).sum()} rows have ImageIDs not in eval/info.csv, e.g. "
                           f"{frame.image_key[where < 0].iloc[0]}: logits of different eval data?")
    complete, excluded = {}, []
    for model, at in _by_model(frame, expected).items():
        per_fold = np.bincount(frame.fold.iloc[at], minlength=n_splits)
        short = [f"{f} ({n} of {len(ids)} images)" for f, n in enumerate(per_fold) if n < len(ids)]
        if not len(at) or short:
            reason = f"test logits incomplete for fold models {', '.join(short)}" if len(at) else "no test rows"
            excluded.append(Exclusion(model, reason))
            continue
        # Each (fold, image) occurs once (duplicates were refused), so plain assignment fills it.
        per_model = np.empty((n_splits, len(ids), width), np.float32)
        per_model[frame.fold.to_numpy()[at], where[at]] = file.logits[at]
        complete[model] = model_logits(per_model)
    _log_exclusions(excluded, log)
    stack = np.stack(list(complete.values())) if complete else np.empty((0, len(ids), width), np.float32)
    return EvalLogits(tuple(complete), stack, np.asarray(eval_ids, dtype=object), file.rows_hash, tuple(excluded))


def model_logits(per_fold: np.ndarray) -> np.ndarray:
    """(F, T, C) logits of a model's fold models (in fold order) -> the model's (T, C) test logits:
    their mean. The one place this happens: `orchestrator.predict` combines the fold models'
    logits of new photos through here too, so its answers and the submission's cannot drift."""
    return np.asarray(per_fold, np.float32).mean(axis=0)


@dataclass(frozen=True)
class LogitsFile:
    frame: pd.DataFrame  # key columns
    logits: np.ndarray  # (rows, C)
    rows_hash: str


def _read(path: Path, split: str, target: str = ALL) -> LogitsFile:
    if not path.is_file():
        raise ResultsError(f"{path}: not found; run the experiment first or pick another with --results")
    try:
        frame, logits, meta = read_logits(path)
    except (LogitsError, pa.ArrowException, OSError) as err:
        raise ResultsError(f"{path}: cannot be read as maskfold logits: {str(err).removeprefix(f'{path}: ')}") from None
    if meta.target != target:
        raise ResultsError(f"{path}: holds logits of target {meta.target!r}, expected {target!r}; re-run "
                           "`python -m orchestrator.run` to gather the jobs again")
    wrong = frame.split != split
    if wrong.any():
        raise ResultsError(f"{path}: {wrong.sum()} rows have split {frame.split[wrong].iloc[0]!r}, "
                           f"expected only {split!r}")
    bad = ~np.isfinite(logits).all(axis=1)
    if bad.any():
        models = sorted(frame.model[bad].unique())
        raise ResultsError(f"{path}: {bad.sum()} rows have NaN or infinite logits (models {models}); "
                           f"re-run those jobs")
    return LogitsFile(frame, logits, meta.rows_hash)


def _by_model(frame: pd.DataFrame, expected: Sequence[str]) -> dict[str, np.ndarray]:
    """Row positions per model: the spec's models first (empty if absent), then any others."""
    groups = frame.groupby("model", sort=True).indices
    names = list(expected) + [m for m in groups if m not in expected]
    return {m: groups.get(m, np.empty(0, np.int64)) for m in names}


def _oof_gap(rows: pd.DataFrame, n_images: int, n_splits: int) -> str | None:
    # Folds are checked apart from the count: a fold every model lost is in no one's rows.
    missing = sorted(set(range(n_splits)) - set(rows.fold.unique().tolist()))
    if len(rows) == n_images and not missing:
        return None
    where = f"fold {', '.join(map(str, missing))} missing" if missing else "images missing within folds"
    return f"OOF covers {len(rows)} of {n_images} training images ({where})"


def _log_exclusions(excluded: list[Exclusion], log: Log) -> None:
    for item in excluded:
        log(f"excluded model {item.model!r}: {item.reason}")
