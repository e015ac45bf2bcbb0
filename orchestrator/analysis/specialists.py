"""Attribute specialists' logits (models with `train.target: mask|gender|age`), beside the
all-class models'.

Each attribute's specialists are gathered into oof_<attribute>.parquet / test_<attribute>.parquet
(oof_<attribute>_r<r>.parquet per repeat): the columns of every logits file, with the attribute's
3, 2 or 3 logits per row (tasks.logits). Their OOF rows must be the all-class models' rows (the
same images, people, folds and given labels), or the blend could not set them side by side: a
ResultsError says so. A specialist lacking rows is left out with its reason, as any model is.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.analysis.results import EvalLogits, Exclusion, OofLogits, load_target
from orchestrator.analysis.results_folder import ResultsError
from tasks.labels import ATTRIBUTES
from tasks.log import Log, to_stdout
from tasks.logits import gathered_name
from tasks.spec.experiment import Experiment

# What a blend's inputs per attribute are: each attribute's specialists' logits, (S_a, N, k_a).
SpecialistLogits = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Specialists:
    """Complete specialists per attribute (those with any), in ATTRIBUTES order, each attribute's
    in spec order; OOF rows in the all-class models' order."""

    oof: dict[str, OofLogits]
    test: dict[str, EvalLogits]
    excluded: tuple[Exclusion, ...] = ()

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(m for o in self.oof.values() for m in o.models)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(a for a, o in self.oof.items() for _ in o.models)

    def oof_logits(self, repeat: int | None = None) -> dict[str, np.ndarray]:
        """Per attribute (S_a, N, k_a): averaged over repeats, or one repeat's alone."""
        if repeat is None:
            return {a: o.logits for a, o in self.oof.items()}
        return {a: np.ascontiguousarray(o.logits if o.repeat_logits is None else o.repeat_logits[repeat])
                for a, o in self.oof.items()}

    def test_logits(self) -> dict[str, np.ndarray]:
        return {a: t.logits for a, t in self.test.items()}

    def only(self, names: Sequence[str]) -> Specialists | None:
        """These specialists alone (a round of a pool); None if none of them is here."""
        oof, test = {}, {}
        for a, o in self.oof.items():
            keep = [i for i, m in enumerate(o.models) if m in names]
            if keep:
                oof[a], test[a] = select(o, keep), select_test(self.test[a], keep)
        return Specialists(oof, test) if oof else None


def select(o: OofLogits, keep: list[int], names: Sequence[str] | None = None) -> OofLogits:
    """The models at `keep` of an OofLogits (renamed to `names` if given)."""
    return OofLogits(tuple(names) if names else tuple(o.models[i] for i in keep), o.logits[keep], o.image_key,
                     o.person, o.fold, o.target, o.rows_hash, o.excluded,
                     None if o.repeat_logits is None else o.repeat_logits[:, keep])


def select_test(t: EvalLogits, keep: list[int], names: Sequence[str] | None = None) -> EvalLogits:
    return EvalLogits(tuple(names) if names else tuple(t.models[i] for i in keep), t.logits[keep], t.image_ids,
                      t.rows_hash, t.excluded)


def load_specialists(exp_dir: Path, spec: Experiment, oof: OofLogits, targets: Mapping[str, str],
                     log: Log = to_stdout) -> Specialists:
    """Every attribute's complete specialists, their rows checked against the all-class `oof`'s."""
    by_attribute, tests, excluded = {}, {}, []
    for attribute in ATTRIBUTES:
        names = [m for m, t in targets.items() if t == attribute]
        path = exp_dir / gathered_name("oof", 0, attribute)
        if not names:
            continue
        if not path.is_file():
            excluded += [Exclusion(m, f"no {path.name} (its jobs failed or did not run)") for m in names]
            for e in excluded[-len(names):]:
                log(f"excluded model {e.model!r}: {e.reason}")
            continue
        a_oof, a_test = load_target(exp_dir, spec, attribute, names, log)
        excluded += a_oof.excluded
        if a_oof.models:
            check_rows(path, oof, a_oof)
            by_attribute[attribute], tests[attribute] = a_oof, a_test
    return Specialists(by_attribute, tests, tuple(excluded))


def check_rows(path: Path, oof: OofLogits, other: OofLogits) -> None:
    """The same OOF images as the all-class models', each with the same person, fold and label."""
    same = (np.array_equal(oof.image_key, other.image_key) and np.array_equal(oof.target, other.target)
            and np.array_equal(oof.fold, other.fold) and np.array_equal(oof.person, other.person))
    if not same:
        raise ResultsError(f"{path}: its OOF rows (images, people, folds or given labels) are not oof.parquet's; "
                           "re-run `python -m orchestrator.run` to gather every model's logits of the current folds")
