"""Repeated person folds (`folds.repeats: R`): each repeat is a complete K-fold of its own,
gathered into oof_r<r>.parquet / test_r<r>.parquet beside repeat 0's oof.parquet / test.parquet.

A person's R held-out predictions come from R models that never saw them; averaging them makes
every OOF row an R-member ensemble, as the eval photos' rows are an ensemble of all R x K fold
models. The blend fits on the averaged rows; repeat 0's rows alone stay in `repeat_logits` so
that the gain of averaging can be measured (orchestrator.analysis.ensembles.expected).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from orchestrator.analysis.results import EvalLogits, Exclusion, OofLogits, load_oof, load_test
from orchestrator.analysis.results_folder import ResultsError, read_eval_ids
from tasks.data.folds import fold_column
from tasks.log import Log
from tasks.logits import gathered_name
from tasks.spec.experiment import Experiment


def load_repeats(exp_dir: Path, spec: Experiment, oof: OofLogits, test: EvalLogits,
                 log: Log) -> tuple[OofLogits, EvalLogits]:
    """Repeat 0's logits (`oof`, `test`) with every other repeat's added: models complete in
    every repeat, OOF logits averaged per row over repeats, test logits over all fold models."""
    expected = [m.name for m in spec.models]
    n_splits, oofs, tests = spec.folds.n_splits, [oof], [test]
    for r in range(1, spec.folds.repeats):
        oofs.append(load_oof(exp_dir / gathered_name("oof", r), n_splits, expected, exp_dir / "folds.parquet",
                             log, fold_column(r)))
        tests.append(load_test(exp_dir / gathered_name("test", r), n_splits, read_eval_ids(spec.data.root),
                               expected, log))
    for r, (o, t) in enumerate(zip(oofs, tests)):
        _check_repeat(exp_dir, r, oof, o, t)
    models = tuple(m for m in oof.models if all(m in o.models for o in oofs) and all(m in t.models for t in tests))
    excluded = oof.excluded + test.excluded + tuple(
        Exclusion(e.model, f"repeat {r}: {e.reason}") for r in range(1, len(oofs))
        for e in oofs[r].excluded + tests[r].excluded)
    stack = np.stack([o.logits[[o.models.index(m) for m in models]] for o in oofs])
    test_mean = np.mean([t.logits[[t.models.index(m) for m in models]] for t in tests], axis=0)
    return (OofLogits(models, stack.mean(axis=0), oof.image_key, oof.person, oof.fold, oof.target, oof.rows_hash,
                      excluded, stack),
            EvalLogits(models, test_mean.astype(np.float32), test.image_ids, test.rows_hash, excluded))


def _check_repeat(exp_dir: Path, repeat: int, first: OofLogits, oof: OofLogits, test: EvalLogits) -> None:
    name = gathered_name("oof", repeat)
    if oof.rows_hash != first.rows_hash or test.rows_hash != first.rows_hash:
        raise ResultsError(f"{exp_dir}/{name}: made for other data than oof.parquet (rows hash {oof.rows_hash}, "
                           f"not {first.rows_hash}); re-run `python -m orchestrator.run` to gather every repeat again")
    if not np.array_equal(oof.image_key, first.image_key) or not np.array_equal(oof.target, first.target):
        raise ResultsError(f"{exp_dir}/{name}: its images or labels differ from oof.parquet's; re-run "
                           "`python -m orchestrator.run` to gather every repeat again")
