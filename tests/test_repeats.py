"""Repeated person folds (folds.repeats): identities, folds, gathering, averaging and the
expected score they make possible."""
import json

import numpy as np
import pandas as pd
import pytest

from orchestrator import blend
from orchestrator.analysis.ensembles.expected import Expectation, expected_interval, extrapolate
from orchestrator.analysis.ensembles.uncertainty import PersonBootstrap
from orchestrator.cluster.experiment_run import run_experiment
from tasks.data.folds import make_repeated_folds
from tasks.data.preparation import load_dataset, rows_hash
from tasks.job_io import planned_jobs
from tasks.logits import read_logits
from tasks.spec.experiment import SpecError
from tasks.spec.load import load_spec
from tests.helpers.specs import REPO, shrunk_spec


def test_repeat_zero_keeps_every_job_id_and_the_spec_hash(synth_root, tmp_path):
    one = shrunk_spec(synth_root, tmp_path, "models=[{backbone: test_convnext}, {backbone: test_efficientnet}]")
    two = shrunk_spec(synth_root, tmp_path, "models=[{backbone: test_convnext}, {backbone: test_efficientnet}]",
                      "folds.repeats=2")
    assert one.shared_hash() == two.shared_hash() and one.spec_hash() != two.spec_hash()
    assert one.spec_hash() == shrunk_spec(synth_root, tmp_path, "models=[{backbone: test_convnext}, "
                                          "{backbone: test_efficientnet}]", "folds.repeats=1").spec_hash()
    first, both = planned_jobs(one, "rows"), planned_jobs(two, "rows")
    assert [j.job_id for j in both if j.repeat == 0] == [j.job_id for j in first]
    again = [j for j in both if j.repeat == 1]
    assert len(again) == len(first) and not {j.job_hash for j in again} & {j.job_hash for j in first}
    assert all(j.job_id.startswith(f"{j.model}-r1-fold{j.fold}-") for j in again)


def test_repeats_refuse_pseudo_and_search_naming_the_field(synth_root, tmp_path):
    with pytest.raises(SpecError, match=r"folds\.repeats: 2 repeats do not combine with `search:`"):
        load_spec(REPO / "experiments" / "search_demo.yaml", ["folds.repeats=2"], check_data=False)
    with pytest.raises(SpecError, match=r"folds\.repeats: 3 repeats do not combine with `pseudo:`"):
        load_spec(REPO / "experiments" / "pseudo_demo.yaml", ["folds.repeats=3"], check_data=False)
    with pytest.raises(SpecError, match=r"folds\.repeats"):
        shrunk_spec(synth_root, tmp_path, "folds.repeats=0")


def test_each_repeat_splits_people_and_the_repeats_differ(synth_root, tmp_path):
    spec = shrunk_spec(synth_root, tmp_path, "folds.n_splits=3", "folds.repeats=3")
    images = load_dataset(spec, verbose=False).train
    folds = make_repeated_folds(images, 3, spec.folds.seed, 3)
    for column in ("fold", "fold_r1", "fold_r2"):
        assert (folds.groupby("person")[column].nunique() == 1).all()  # people, never images, are split
        assert sorted(folds[column].unique()) == [0, 1, 2]
    per_person = folds.drop_duplicates("person")
    assert (per_person.fold != per_person.fold_r1).mean() > 0.3  # another assignment, not a relabelling
    same = make_repeated_folds(images, 3, spec.folds.seed, 1)
    assert same.fold.equals(folds.fold) and "fold_r1" not in same


def test_extrapolation_passes_through_both_measured_points():
    assert extrapolate(0.50, 0.54, 2, 1) == pytest.approx(0.50)
    assert extrapolate(0.50, 0.54, 2, 2) == pytest.approx(0.54)
    assert extrapolate(0.50, 0.54, 2, 6) == pytest.approx(0.50 + 0.08 * 5 / 6)
    assert extrapolate(0.50, 0.53, 3, 3) == pytest.approx(0.53)
    assert extrapolate(0.50, 0.48, 2, 6) < 0.48  # averaging that hurt keeps hurting


def test_expected_interval_is_wider_for_a_smaller_eval_set():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 18, 700)
    person = np.repeat(np.arange(100), 7)
    one = np.where(rng.random(700) < 0.5, target, rng.integers(0, 18, 700))
    more = np.where(rng.random(700) < 0.6, target, one)
    boot = PersonBootstrap.draw(target, person)
    big = expected_interval(boot, [one], more, Expectation(2, 6, 1000.0, 100))
    small = expected_interval(boot, [one], more, Expectation(2, 6, 20.0, 100))
    at_oof = extrapolate(boot.point(one), boot.point(more), 2, 6)
    assert at_oof > boot.point(more) > boot.point(one)
    assert big.estimate == pytest.approx(at_oof, abs=0.01)  # a large eval set barely moves macro F1
    assert small.estimate < big.estimate  # on 20 people absent classes pull macro F1 down
    assert big.low < big.estimate < big.high and small.high - small.low > big.high - big.low


@pytest.mark.slow
def test_two_repeats_run_gather_and_blend_into_an_expected_score(synth_root, tmp_path, capsys):
    spec = shrunk_spec(synth_root, tmp_path, "folds.repeats=2", "train.epochs=2",
                       "models=[{backbone: test_convnext}, {backbone: test_efficientnet}]", name="rep")
    summary = run_experiment(spec)
    assert len(summary.done) == 8 and not summary.failed
    exp = spec.out_dir
    first, _, meta0 = read_logits(exp / "oof.parquet")
    second, logits1, meta1 = read_logits(exp / "oof_r1.parquet")
    assert meta0.rows_hash == meta1.rows_hash == rows_hash(spec, load_dataset(spec, verbose=False))
    folds = pd.read_parquet(exp / "folds.parquet").set_index("image_key")
    assert (second.fold.to_numpy() == folds.loc[second.image_key, "fold_r1"].to_numpy()).all()
    assert (first.fold.to_numpy() == folds.loc[first.image_key, "fold"].to_numpy()).all()
    board = pd.read_csv(exp / "leaderboard.csv", dtype={"fold": str})
    assert {"0", "1", "r1:0", "r1:1"} <= set(board.fold)
    assert blend.main(["--results", str(exp), "--truth", str(synth_root / "truth" / "eval_answers.csv")]) == 0
    out = capsys.readouterr().out
    assert "expected on new people: macro F1 " in out and "4 fold models the submission averages" in out
    record = json.loads((exp / "blend" / "weights.json").read_text())
    e = record["expected"]
    assert e["members_per_oof_row"] == 2 and e["members_per_eval_photo"] == 4
    assert e["interval"][0] < e["macro_f1"] < e["interval"][1]
    methods = pd.read_csv(exp / "blend" / "leaderboard.csv")
    assert methods.expected_macro_f1.notna().all()
    assert (methods.expected_macro_f1_low < methods.expected_macro_f1_high).all()
