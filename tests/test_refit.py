"""Refit on every person (`refit:`): the spec refuses what cannot work, a refit job is a plain
function that trains on everyone on the folds' schedule, and the blend, predict and the run
combine its test logits as the spec says, fitted on fold OOF rows alone."""
import json

import numpy as np
import pandas as pd
import pytest

from orchestrator import blend, predict
from orchestrator.analysis.refit import apply_refit, combine_refit
from orchestrator.analysis.results import EvalLogits, load_blend_inputs
from orchestrator.analysis.results_folder import ResultsError, load_experiment
from orchestrator.cluster.experiment_run import run_experiment
from tasks.data.preparation import prepare, rows_hash
from tasks.job import train_job
from tasks.job_io import Job, JobResult, planned_jobs, unfinished_reason
from tasks.logits import REFIT_FILE, LogitsMeta, logits_table, read_logits, write_logits
from tasks.refits import refit_epochs
from tasks.spec.experiment import SpecError
from tasks.spec.load import load_spec
from tasks.spec.refit import REFIT_FOLD
from tests.helpers.specs import REPO, shrunk_spec

TWO = "models=[{backbone: test_convnext}, {backbone: test_efficientnet, name: eff}]"


def test_refit_keeps_every_fold_job_id_and_the_spec_hash(synth_root, tmp_path):
    plain = shrunk_spec(synth_root, tmp_path, TWO)
    refit = shrunk_spec(synth_root, tmp_path, TWO, "refit={epochs: 4, models: [eff], combine: replace}")
    assert plain.spec_hash() == refit.spec_hash()
    assert [j.job_id for j in planned_jobs(plain, "rows")] == [j.job_id for j in planned_jobs(refit, "rows")]


@pytest.mark.parametrize("override, message", [
    ("refit={models: [nope]}", r"refit\.models\.0: no model named 'nope'"),
    ("refit={epochs: 0}", r"refit\.epochs"),
    ("refit={combine: sum}", r"refit\.combine"),
    ("train.scheduler.name=plateau", r"refit: model 'test_convnext' uses scheduler plateau"),
])
def test_refit_refuses_what_it_cannot_do_naming_the_field(synth_root, tmp_path, override, message):
    with pytest.raises(SpecError, match=message):
        shrunk_spec(synth_root, tmp_path, "refit={}", override)


def test_refit_refuses_specialists_pseudo_and_search(synth_root, tmp_path):
    with pytest.raises(SpecError, match=r"refit\.models\.1: 'age' is a age specialist"):
        shrunk_spec(synth_root, tmp_path, "models=[{backbone: test_convnext}, {backbone: test_convnext, name: age, "
                    "train: {target: age}}]", "refit={models: [test_convnext, age]}")
    for name in ("pseudo_demo", "search_demo"):
        part = name.split("_")[0]
        with pytest.raises(SpecError, match=rf"refit: does not combine with `{part}:`"):
            load_spec(REPO / "experiments" / f"{name}.yaml", ["refit={}"], check_data=False)


def test_refit_epochs_are_the_median_best_epoch_or_the_given_count(synth_root, tmp_path):
    best = shrunk_spec(synth_root, tmp_path, "refit={}")
    assert refit_epochs(best, [3, 8, 5]) == 5
    assert refit_epochs(best, [2, 3]) == 3  # 2.5, half up: a count of epochs is whole
    assert refit_epochs(best, [4, 4, 6, 7]) == 5
    assert refit_epochs(shrunk_spec(synth_root, tmp_path, "refit={epochs: 11}"), [3, 8, 5]) == 11


@pytest.mark.slow
def test_a_refit_job_trains_everyone_on_the_folds_schedule_and_writes_test_logits_only(synth_root, tmp_path):
    spec = shrunk_spec(synth_root, tmp_path, "folds.n_splits=3", "train.epochs=4", "train.patience=1",
                       "train.batch_size=16", "train.scheduler.name=cosine", "refit={}", name="refitjob")
    dataset = prepare(spec, verbose=False)
    fold = train_job(spec, Job("test_convnext", 0, tmp_path / "fold"), dataset=dataset, log=lambda s: None)
    refit = train_job(spec, Job("test_convnext", REFIT_FOLD, tmp_path / "refit", epochs=3), dataset=dataset,
                      log=lambda s: None)
    assert unfinished_reason(tmp_path / "refit") is None and not (tmp_path / "refit" / "oof.parquet").exists()
    assert JobResult.read(tmp_path / "refit").fold == REFIT_FOLD
    assert refit.epochs_run == 3 and refit.best_epoch == 3 and np.isnan(refit.val["macro_f1"])  # no early stop
    assert refit.val_images == 0 and refit.test_images == len(dataset.eval)
    history = pd.read_csv(refit.metrics_path)
    # every training photo trains, 3/2 as many as a 3-fold job's
    assert history.train_images.iloc[0] == pytest.approx(len(dataset.train), abs=spec.train.batch_size)
    folds = pd.read_csv(fold.metrics_path)
    assert history.lr.tolist() == pytest.approx(folds.lr.iloc[:3].tolist())  # the folds' schedule, stopped at 3
    frame, logits, _ = read_logits(tmp_path / "refit" / "test.parquet")
    assert list(frame.image_key) == list(dataset.eval.image_key) and set(frame.fold) == {REFIT_FOLD}
    assert logits.shape == (len(dataset.eval), 18) and np.isfinite(logits).all()


def _eval_logits(models, n=6, seed=0) -> EvalLogits:
    rng = np.random.default_rng(seed)
    return EvalLogits(tuple(models), rng.normal(size=(len(models), n, 18)).astype(np.float32),
                      np.array([f"img{i}.jpg" for i in range(n)], dtype=object), "rows", ())


def _write_refit(exp_dir, model, logits, ids, rows="rows"):
    frame = pd.DataFrame({"image_key": ids, "experiment": "t", "model": model, "fold": REFIT_FOLD, "split": "test",
                          "person": None, "target": None})
    write_logits(exp_dir / REFIT_FILE, logits_table(frame, logits, LogitsMeta.of_target(rows, "all")))


def test_apply_refit_averages_or_replaces_only_the_listed_models(synth_root, tmp_path):
    test = _eval_logits(["test_convnext", "eff"])
    refit = np.full((6, 18), 3.0, np.float32)
    _write_refit(tmp_path, "eff", refit, test.image_ids)
    lines = []
    spec = shrunk_spec(synth_root, tmp_path, TWO, "refit={combine: average}")
    out = apply_refit(tmp_path, spec, test, lines.append)
    assert np.array_equal(out.logits[0], test.logits[0])  # no refit logits of it: its fold mean alone
    assert np.allclose(out.logits[1], (test.logits[1] + 3.0) / 2)
    assert out.refit.models == ("eff",) and out.refit.missing == ("test_convnext",) and "test_convnext" in lines[0]
    replaced = apply_refit(tmp_path, shrunk_spec(synth_root, tmp_path, TWO, "refit={models: [eff]}"),
                           test, lines.append)  # replace is the default
    assert np.array_equal(replaced.logits[1], refit) and replaced.refit.missing == ()
    assert np.array_equal(combine_refit(test.logits[0], refit, "replace"), refit)
    _write_refit(tmp_path, "eff", refit, test.image_ids, rows="other")
    with pytest.raises(ResultsError, match="made for other data"):
        apply_refit(tmp_path, spec, test, lines.append)


@pytest.mark.slow
def test_run_refits_after_the_folds_and_blend_and_predict_use_it(synth_root, tmp_path, capsys):
    spec = shrunk_spec(synth_root, tmp_path, "train.epochs=2", "refit={}", name="refit")
    summary = run_experiment(spec)
    refits = [j for j in summary.done if "-refit-" in j]
    assert len(summary.done) == 3 and len(refits) == 1 and not summary.failed
    best = [JobResult.read(spec.out_dir / "jobs" / j).best_epoch for j in summary.done if j not in refits]
    assert JobResult.read(spec.out_dir / "jobs" / refits[0]).epochs_run == refit_epochs(spec, best)
    frame, refit_logits, meta = read_logits(spec.out_dir / REFIT_FILE)
    assert meta.rows_hash == rows_hash(spec, prepare(spec, verbose=False)) and set(frame.fold) == {REFIT_FOLD}
    again = run_experiment(spec)
    assert set(again.cached) == set(summary.done) and not again.done  # the refit job is cached too
    capsys.readouterr()
    assert blend.main(["--results", str(spec.out_dir)]) == 0
    assert "test logits: refit models in the test logits of test_convnext (replacing" in capsys.readouterr().out
    record = json.loads((spec.out_dir / "blend" / "weights.json").read_text())
    assert record["refit"]["models"] == ["test_convnext"] and record["refit"]["combine"] == "replace"
    submission = pd.read_csv(spec.out_dir / "blend" / "submission.csv")
    folds, fold_logits, _ = read_logits(spec.out_dir / "test.parquet")
    used = load_blend_inputs(spec.out_dir, load_experiment(spec.out_dir), log=lambda s: None)
    assert np.allclose(used.test.logits[0], refit_logits, atol=1e-6)
    mean = np.mean([fold_logits[(folds.fold == f).to_numpy()] for f in (0, 1)], axis=0)
    averaged = load_blend_inputs(spec.out_dir, load_experiment(spec.out_dir, ["refit.combine=average"]),
                                 log=lambda s: None)
    assert np.allclose(averaged.test.logits[0], (mean + refit_logits) / 2, atol=1e-6)
    assert blend.main(["--results", str(spec.out_dir), "--out", str(tmp_path / "off"), "--set", "refit.models=[]"]) == 0
    without = pd.read_csv(tmp_path / "off" / "blend" / "submission.csv")
    assert json.loads((tmp_path / "off" / "blend" / "weights.json").read_text())["refit"] is None
    assert len(without) == len(submission) and set(folds.fold) == {0, 1}  # refit is not among the fold models
    out = tmp_path / "pred.csv"
    assert predict.main([str(synth_root / "eval" / "images"), "--results", str(spec.out_dir), "--out", str(out)]) == 0
    predicted = pd.read_csv(out).assign(ImageID=lambda t: t.path.map(lambda p: p.split("/")[-1]))
    merged = submission.merge(predicted, on="ImageID")
    assert len(merged) == len(submission) and (merged.ans == merged["class"]).all()
