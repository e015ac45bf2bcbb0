"""An experiment's results folder as the analysis side reads it: which one, its saved spec
(with the few `--set` overrides that cannot change the rows), its eval order and true answers.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tasks.data.dataset import read_table
from tasks.errors import UserError
from tasks.labels import NUM_CLASSES
from tasks.log import Log, silent
from tasks.spec.experiment import Experiment, SpecError
from tasks.spec.load import load_spec
from tasks.spec.overrides import parse_override


class ResultsError(UserError):
    """An experiment's results folder, or a file in it or beside it (eval/info.csv, a truth
    file), that blend, audit, report or pseudo labelling cannot use, and what to do about it."""


# Which experiment a command takes without --results: `blend` the one whose logits were
# gathered last (the run just finished); audit, explain and report the one blended last, since
# they read its blend, so a later run of another experiment does not move them under the user.
PREFER_GATHERED = "gathered"
PREFER_BLENDED = "blended"


def find_experiment(results: Path | None, root: Path = Path("results"), *,
                    prefer: str = PREFER_GATHERED, log: Log = silent) -> Path:
    """`results` if given, else the experiment under `root` gathered (or blended) last, named in `log`."""
    if results is not None:
        if not (results / "spec.yaml").is_file():
            raise ResultsError(f"{results}: not an experiment's results folder (no spec.yaml in it); "
                               f"pass --results results/<experiment>")
        log(f"experiment: {results}")
        return results
    found = [d for d in sorted(root.glob("*")) if (d / "spec.yaml").is_file() and (d / "oof.parquet").is_file()]
    if not found:
        raise ResultsError(f"no experiment with gathered logits (spec.yaml and oof.parquet) under "
                           f"{root.resolve()}; run an experiment first or pass --results DIR")
    blended = [d for d in found if (d / "blend" / "weights.json").is_file()]
    if prefer == PREFER_BLENDED and blended:
        chosen, rule = max(blended, key=lambda d: os.path.getmtime(d / "blend" / "weights.json")), "blended last"
    else:
        chosen, rule = max(found, key=lambda d: os.path.getmtime(d / "oof.parquet")), "gathered last"
    if len(found) == 1:
        log(f"experiment: {chosen} (the only one under {root}/)")
    else:
        log(f"experiment: {chosen} ({rule} of the {len(found)} under {root}/; --results picks another)")
    return chosen


# Where the data and its cache are now: neither changes the rows the logits belong to.
RESULTS_DATA_FIELDS = ("data.root", "data.cache_dir", "data.decode_workers")
# How the refit models' test logits join the fold models' (analysis.refit): no job changes.
# `refit.models=[]` blends without them.
RESULTS_REFIT_FIELDS = ("refit.combine", "refit.models")


def load_experiment(exp_dir: Path, overrides: Sequence[str] = ()) -> Experiment:
    """The resolved spec saved with the results, with `--set` overrides (SpecError if invalid).

    The logits were made with the saved spec, so only how to blend, where the data and its
    cache now are, where the blend is tracked and what `--reinfer` runs on may change: another
    fold count would only make the results look broken.
    """
    path = exp_dir / "spec.yaml"
    for text in overrides:
        try:
            parts, _ = parse_override(text)
        except ValueError:
            continue  # load_spec names the malformed override
        if parts[0] not in ("blend", "resources", "tracking") and \
                ".".join(parts[:2]) not in RESULTS_DATA_FIELDS + RESULTS_REFIT_FIELDS:
            raise SpecError(f"{path}: --set {'.'.join(parts)}: blend, audit and report read the experiment as it "
                            "was run; only blend.*, resources.*, tracking.*, refit.combine, refit.models and "
                            "data.root, data.cache_dir, data.decode_workers can be overridden (run a new experiment "
                            f"to change {parts[0]})")
    return load_spec(path, list(overrides), check_data=False)


def read_eval_ids(data_root: Path) -> np.ndarray:
    path = data_root / "eval" / "info.csv"
    if not path.is_file():
        raise ResultsError(f"{path}: not found; the submission needs eval/info.csv's row order "
                           f"(fix data.root with --set data.root=/path/to/data)")
    info = read_table(path, "eval image list (info.csv)")  # DataError naming a ragged line
    if "ImageID" not in info.columns or info.empty:
        raise ResultsError(f"{path}: expected a non-empty ImageID column, got columns {list(info.columns)}")
    dup = info.ImageID[info.ImageID.duplicated()]
    if len(dup):
        raise ResultsError(f"{path}: {len(dup)} duplicate ImageIDs, e.g. {dup.iloc[0]}")
    return info.ImageID.to_numpy(dtype=object)


def read_truth(path: Path, image_ids: np.ndarray) -> np.ndarray:
    """Answers in `image_ids` order from an ImageID,ans CSV: classes 0..17, one per image."""
    truth = read_table(path, "truth file")
    if not {"ImageID", "ans"} <= set(truth.columns):
        raise ResultsError(f"{path}: expected columns ImageID,ans, got {list(truth.columns)}")
    ans = truth.ans.str.strip()
    number = ans.str.fullmatch(r"[0-9]{1,3}")  # ASCII digits only, like every other number read
    bad = ~number | (ans.where(number, "0").astype(int) >= NUM_CLASSES)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ResultsError(f"{path}: {bad.sum()} answers are not a class 0..{NUM_CLASSES - 1}, e.g. line {i + 2}: "
                           f"{truth.ImageID[i]},{truth.ans[i]}")
    truth = truth.assign(ans=ans.astype(np.int64))
    answers_per_id = truth.groupby("ImageID", sort=False).ans.nunique()
    if (answers_per_id > 1).any():
        image = answers_per_id.index[answers_per_id > 1][0]
        rows = truth.index[truth.ImageID == image]
        raise ResultsError(f"{path}: {(answers_per_id > 1).sum()} ImageIDs have different answers, e.g. {image} on "
                           f"lines {', '.join(str(r + 2) for r in rows)}: {', '.join(map(str, truth.ans[rows]))}")
    answers = truth.drop_duplicates("ImageID").set_index("ImageID").ans.reindex(image_ids)
    if answers.isna().any():
        raise ResultsError(f"{path}: no answer for {answers.isna().sum()} eval images, e.g. "
                           f"{answers.index[answers.isna()][0]}")
    return answers.to_numpy(np.int64)


def rows_hash_as_run(exp_dir: Path, dataset) -> str:
    """The rows hash the experiment's jobs were planned on: of its saved spec, with the data as
    found now. `--set data.root` moves the data, not the rows the job ids were made from."""
    from tasks.data.preparation import rows_hash

    return rows_hash(load_experiment(exp_dir), dataset)


def planned_jobs_as_run(exp_dir: Path) -> list:
    """The saved spec's planned jobs (tasks.job_io.PlannedJob: model, fold, folder), on the rows
    manifest.json names (prepare writes it), finished or not; ResultsError if they cannot be named."""
    import json

    from orchestrator.analysis.pseudo_labels.outputs import saved_hashes
    from tasks.job_io import planned_jobs

    try:
        rows = json.loads((exp_dir / "manifest.json").read_text())["rows_hash"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ResultsError(f"{exp_dir / 'manifest.json'}: cannot read its rows_hash ({type(err).__name__}); "
                           "run `python -m orchestrator.prepare` on the experiment's spec again") from None
    spec = load_experiment(exp_dir)
    try:
        return planned_jobs(spec, rows, saved_hashes(spec), exp_dir / "jobs")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ResultsError(f"{exp_dir}: cannot name the experiment's jobs ({type(err).__name__}: {err})") from None


def refits_as_run(exp_dir: Path) -> list:
    """The saved spec's refit jobs (tasks.job_io.PlannedRefit) whose fold jobs all finished, as the
    run planned them from those jobs' best epochs; [] without `refit:`."""
    import json

    from tasks.job_io import JobResult, unfinished_reason
    from tasks.refits import planned_refits

    spec = load_experiment(exp_dir)
    if spec.refit is None:
        return []
    rows = json.loads((exp_dir / "manifest.json").read_text())["rows_hash"]
    finished: dict[str, list] = {}
    for job in planned_jobs_as_run(exp_dir):
        if not unfinished_reason(job.out_dir):
            finished.setdefault(job.model, []).append(JobResult.read(job.out_dir))
    return planned_refits(spec, rows, finished, exp_dir / "jobs")


def finished_job_dirs(exp_dir: Path) -> list[Path]:
    """The folders of the saved spec's planned jobs that hold a result.json, on the rows
    manifest.json names (prepare writes it): jobs of settings since changed are not listed.
    [] without a manifest or spec."""
    try:
        plans = planned_jobs_as_run(exp_dir)
    except UserError:
        return []
    return [p.out_dir for p in plans if (p.out_dir / "result.json").is_file()]
