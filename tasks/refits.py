"""The refit jobs of a spec (`refit:`, tasks/spec/refit.py): one per model whose fold jobs all
finished, for an epoch count read from those jobs' best epochs. `planned_refits` is the one
place that names them, as `planned_jobs` names fold jobs: the run, predict and export find them
through it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.job_io import JobResult, job_hash
from tasks.spec.experiment import Experiment, stable_hash
from tasks.spec.refit import REFIT_FOLD, refit_models


@dataclass(frozen=True)
class PlannedRefit:
    """A refit model (tasks/spec/refit.py): its identity, epoch count and where its outputs are."""

    model: str
    epochs: int
    job_hash: str
    out_dir: Path  # results/<name>/jobs/<model>-refit-<hash8>
    fold_epochs: tuple[int, ...]  # the best epochs of the fold models it was counted from

    @property
    def job_id(self) -> str:
        return self.out_dir.name


def refit_epochs(spec: Experiment, best_epochs: list[int]) -> int:
    """`refit.epochs`, or with `best` the median best epoch of the model's fold models (rounded
    half up, as a count of epochs must be whole)."""
    if spec.refit.epochs != "best":
        return int(spec.refit.epochs)
    ordered = sorted(best_epochs)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return max(1, int(median + 0.5))


def planned_refits(spec: Experiment, rows_hash: str, fold_results: dict[str, list[JobResult]],
                   jobs_dir: Path | None = None) -> list[PlannedRefit]:
    """The refit job of each of `spec.refit`'s models whose fold jobs all finished (`fold_results`:
    their results by model). Its identity is its model's settings, the rows and its epoch count."""
    jobs_dir, plans = jobs_dir or spec.out_dir / "jobs", []
    targets = {m.name: spec.train_for(m).target for m in spec.models}
    for name in refit_models(spec.refit, targets):
        results = fold_results.get(name, [])
        if len(results) < spec.folds.n_splits * spec.folds.repeats:
            continue
        best = tuple(sorted(r.best_epoch for r in results))
        epochs = refit_epochs(spec, list(best))
        model = spec.model(name)
        digest = job_hash(spec, model, spec.train_for(model), REFIT_FOLD, rows_hash) + f"-{epochs}"
        digest = stable_hash(digest)
        plans.append(PlannedRefit(name, epochs, digest, jobs_dir / f"{name}-refit-{digest[:8]}", best))
    return plans
