"""Whether round 1 (`pseudo.source`) labelled the same eval photos and held out the same people.

Checked twice with the same words: by prepare, on round 1's files, before it writes anything
(a refused round 2 leaves no spec.yaml, manifest or folds behind), and by pseudo labelling, on
the complete models' logits it actually reads.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.pseudo.fold_sets import PseudoError
from tasks.spec.experiment import Experiment


def eval_difference(theirs: Sequence[str], mine: Sequence[str]) -> str | None:
    """None if round 1's eval ImageIDs are this experiment's; else how many differ and the first."""
    theirs_set, mine_set = set(theirs), set(mine)
    if theirs_set == mine_set:
        return None
    missing = [(i, image) for i, image in enumerate(mine) if image not in theirs_set]
    extra = [image for image in theirs if image not in mine_set]
    first = (f"the first {missing[0][1]} (row {missing[0][0] + 1} of eval/info.csv)" if missing
             else f"the first only in round 1: {extra[0]}")
    return (f"its eval set differs from this experiment's: {len(missing)} of this experiment's {len(mine_set)} "
            f"ImageIDs are not in round 1's {len(theirs_set)}, {first}")


def fold_difference(mine: pd.Series, theirs: pd.Series) -> str | None:
    """None if every image of this experiment (fold by image_key) is in round 1 in the same fold."""
    common = mine.index.intersection(theirs.index)
    moved = int((mine[common] != theirs[common]).sum())
    if not moved and len(common) == len(mine):
        return None
    example = next((k for k in mine.index if k not in theirs.index or mine[k] != theirs[k]), "")
    return (f"folds differ from this experiment's ({moved} of {len(mine)} photos in another fold, "
            f"{len(mine) - len(common)} not in round 1; e.g. {example})")


def check_round1_rows(spec: Experiment, source_splits: int, mine: pd.Series, theirs: pd.Series,
                      eval_ids: Sequence[str], source_eval: Sequence[str]) -> None:
    """PseudoError unless round 1 covers this eval set and, for per-fold labels, these folds.
    `mine`/`theirs`: each image's fold by image_key, here and in round 1."""
    where = f"pseudo.source {spec.pseudo.source}"
    differs = eval_difference(source_eval, eval_ids)
    if differs:
        raise PseudoError(f"{where}: {differs}: round 1 must be run on the same data")
    if not spec.pseudo.per_fold:
        return
    if source_splits != spec.folds.n_splits:
        raise PseudoError(f"{where}: {source_splits} folds, this experiment has {spec.folds.n_splits}; "
                          "per-fold labels need the same folds (set folds like round 1's)")
    differs = fold_difference(mine, theirs)
    if differs:
        raise PseudoError(f"{where}: {differs}: per-fold labels would come from models that saw the fold's people; "
                          "use round 1's data, folds and fold seed")


def check_source_rows(spec: Experiment, folds: pd.DataFrame, eval_ids: np.ndarray) -> None:
    """check_round1_rows on round 1's files (spec.yaml, oof.parquet, test.parquet), before
    anything of this experiment is written. A source without them is left to pseudo labelling,
    which names what is missing."""
    import pyarrow.parquet as pq

    from tasks.spec.load import load_spec

    source = Path(spec.pseudo.source)
    if not all((source / name).is_file() for name in ("spec.yaml", "oof.parquet", "test.parquet")):
        return
    try:
        src_spec = load_spec(source / "spec.yaml", check_data=False)
        oof = pq.read_table(source / "oof.parquet", columns=["image_key", "fold"]).to_pandas()
        test = pq.read_table(source / "test.parquet", columns=["image_key"]).column("image_key").to_pylist()
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise PseudoError(f"pseudo.source: {source}: cannot read round 1 ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:200]}); run round 1 again") from None
    theirs = oof.drop_duplicates("image_key").set_index("image_key")["fold"]
    mine = folds.set_index("image_key")["fold"]
    check_round1_rows(spec, src_spec.folds.n_splits, mine, theirs, list(eval_ids), list(dict.fromkeys(test)))
