"""Repeated person folds (`folds.repeats: R`): each repeat is a complete K-fold of its own,
gathered into oof_r<r>.parquet / test_r<r>.parquet beside repeat 0's oof.parquet / test.parquet.

A person's R held-out predictions come from R models that never saw them; averaging them makes
every OOF row an R-member ensemble, as the eval photos' rows are an ensemble of all R x K fold
models. The blend fits on the averaged rows; repeat 0's rows alone stay in `repeat_logits` so
that the gain of averaging can be measured (orchestrator.analysis.ensembles.expected).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from orchestrator.analysis.results import EvalLogits, Exclusion, OofLogits, load_oof, load_test
from orchestrator.analysis.results_folder import ResultsError
from tasks.data.folds import fold_column
from tasks.labels import ALL
from tasks.log import Log
from tasks.logits import gathered_name
from tasks.spec.experiment import Experiment


def load_repeats(exp_dir: Path, spec: Experiment, oof: OofLogits, test: EvalLogits, log: Log,
                 target: str = ALL, expected: Sequence[str] | None = None) -> tuple[OofLogits, EvalLogits]:
    """Repeat 0's logits (`oof`, `test`) with every other repeat's added: models complete in
    every repeat, OOF logits averaged per row over repeats, test logits over all fold models.
    `target`: whose files (the all-class models', or an attribute's specialists'); `expected`
    their names (default: every model of the spec)."""
    expected = [m.name for m in spec.models] if expected is None else list(expected)
    n_splits, oofs, tests = spec.folds.n_splits, [oof], [test]
    for r in range(1, spec.folds.repeats):
        oofs.append(load_oof(exp_dir / gathered_name("oof", r, target), n_splits, expected, exp_dir / "folds.parquet",
                             log, fold_column(r), target))
        tests.append(load_test(exp_dir / gathered_name("test", r, target), n_splits, test.image_ids, expected,
                               log, target))  # repeat 0's eval ids: eval/info.csv, read once
    for r, (o, t) in enumerate(zip(oofs, tests)):
        _check_repeat(exp_dir, r, oof, o, t, target)
    models = tuple(m for m in oof.models if all(m in o.models for o in oofs) and all(m in t.models for t in tests))
    excluded = oof.excluded + test.excluded + tuple(
        Exclusion(e.model, f"repeat {r}: {e.reason}") for r in range(1, len(oofs))
        for e in oofs[r].excluded + tests[r].excluded)
    stack = np.stack([o.logits[[o.models.index(m) for m in models]] for o in oofs])
    test_mean = np.mean([t.logits[[t.models.index(m) for m in models]] for t in tests], axis=0)
    return (OofLogits(models, stack.mean(axis=0), oof.image_key, oof.person, oof.fold, oof.target, oof.rows_hash,
                      excluded, stack),
            EvalLogits(models, test_mean.astype(np.float32), test.image_ids, test.rows_hash, excluded))


def _check_repeat(exp_dir: Path, repeat: int, first: OofLogits, oof: OofLogits, test: EvalLogits,
                  target: str = ALL) -> None:
    name, first_name = gathered_name("oof", repeat, target), gathered_name("oof", 0, target)
    if oof.rows_hash != first.rows_hash or test.rows_hash != first.rows_hash:
        raise ResultsError(f"{exp_dir}/{name}: made for other data than {first_name} (rows hash {oof.rows_hash}, "
                           f"not {first.rows_hash}); re-run `python -m orchestrator.run` to gather every repeat again")
    if not np.array_equal(oof.image_key, first.image_key) or not np.array_equal(oof.target, first.target):
        raise ResultsError(f"{exp_dir}/{name}: its images or labels differ from {first_name}'s; re-run "
                           "`python -m orchestrator.run` to gather every repeat again")
