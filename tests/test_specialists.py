"""Attribute specialists (`train.target: mask|gender|age`): the spec, a specialist job, its
logits' schema, and the per-attribute blend that can use them (honest, and a no-op for
experiments without specialists)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from orchestrator import blend
from orchestrator.analysis.ensembles import attributes
from orchestrator.analysis.ensembles import fitting as blending
from orchestrator.analysis.ensembles.recipes import plan_recipes, recipe_by_name
from orchestrator.analysis.results import load_blend_inputs
from orchestrator.analysis.results_folder import load_experiment
from tasks.job_io import planned_jobs
from tasks.labels import ATTRIBUTES, NUM_CLASSES, target_labels
from tasks.logits import (
    LOGITS_SCHEMA,
    LogitsError,
    LogitsMeta,
    check_logits_file,
    gathered_name,
    logits_schema,
    logits_table,
    read_logits,
    write_logits,
)
from tasks.metrics import score
from tasks.spec.experiment import BlendSpec, SpecError
from tasks.spec.load import load_spec
from tests.helpers.fake_logits import (
    eval_frame,
    fake_models,
    fake_specialists,
    make_people,
    make_targets,
    oof_frame,
    write_experiment,
    write_specialists,
)
from tests.helpers.specs import DEMO, REPO

N_SPLITS = 4
# All-class models that see the age band poorly; the specialist sees it well.
WEAK_AGE = {"good": {"strength": (3.0, 2.5, 0.6)}, "gender_eye": {"strength": (2.5, 3.5, 0.4)},
            "other": {"strength": (2.8, 2.0, 0.5), "noise": 1.2}}
AGE_ONLY = {"age_only": {"attribute": "age", "strength": 2.5}}
SPEC = BlendSpec(rounds=10)


def demo(*overrides: str):
    return load_spec(DEMO, ["data.root=/nonexistent", "results_dir=/tmp/unused", *overrides], check_data=False)


# --- the spec -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    (["models.0.train={target: mask, head: multi}"], r"models\.0\.train\.head: multi does not combine with target: mask"),
    (["train.head=multi", "models.0.train={target: gender}"],
     r"models\.0\.train\.head \(from the experiment's train\.head\): multi does not combine with target: gender"),
    (["models.2.train={target: mask, age_mse: 0.1}"], r"models\.2\.train\.age_mse: 0\.1 regresses the age, which a "
                                                      r"mask specialist"),
    (["models.0.train={target: gendr}"], r"models\.0\.train\.target: Input should be 'all', 'mask', 'gender' or 'age'"),
    (["models=[{backbone: test_convnext, train: {target: age}}]"], r"models: every model is a specialist"),
])
def test_combinations_that_make_no_sense_name_the_field(overrides, message):
    with pytest.raises(SpecError, match=message):
        demo(*overrides)


def test_an_age_specialist_may_regress_the_age_and_single_head_is_its_head():
    spec = demo("models.0.train={target: age, age_mse: 0.1}")
    train = spec.train_for(spec.models[0])
    assert train.target == "age" and train.head == "single"
    from tasks.train.model import build_model

    net = build_model(spec.models[0], train)
    assert set(net.heads) == {"age", "age_value"} and net.heads["age"].out_features == 3


# Measured on the code before train.target existed (commit 99e402b): every existing id and hash stays.
DEMO_HASH = "33b9b06d22f05959"
DEMO_JOBS = ["test_convnext-fold0-7ded062d", "test_convnext-fold1-54302c56", "test_convnext-fold2-a570e357",
             "test_efficientnet-fold0-7cd92ebc", "test_efficientnet-fold1-8d63e004", "test_efficientnet-fold2-437a1904",
             "convnext_multi-fold0-b9196fef", "convnext_multi-fold1-5307778d", "convnext_multi-fold2-4b7fc0f5"]


def test_an_unchanged_spec_keeps_its_hash_and_job_ids_and_a_specialist_gets_new_ones():
    spec = demo()
    assert spec.spec_hash() == DEMO_HASH and [j.job_id for j in planned_jobs(spec, "rows0")] == DEMO_JOBS
    said = demo("models.0.train={target: all}")  # saying the default changes nothing
    assert said.spec_hash() == DEMO_HASH and [j.job_id for j in planned_jobs(said, "rows0")] == DEMO_JOBS
    special = demo("models.0.train={target: age}")
    jobs = [j.job_id for j in planned_jobs(special, "rows0")]
    assert special.spec_hash() != DEMO_HASH and jobs[3:] == DEMO_JOBS[3:] and not set(jobs[:3]) & set(DEMO_JOBS)


# --- a specialist job, as a plain function -----------------------------------------------------------------

def test_a_specialist_job_trains_its_attribute_and_writes_logits_of_its_width(synth_root, tmp_path):
    from tasks.data.preparation import prepare
    from tasks.job import train_job
    from tasks.job_io import Job
    from tests.helpers.specs import shrunk_spec

    spec = shrunk_spec(synth_root, tmp_path, "models=[{backbone: test_convnext}, {backbone: test_convnext, "
                       "name: gender_only, train: {target: gender}}]")
    dataset = prepare(spec, verbose=False)
    lines = []
    result = train_job(spec, Job("gender_only", 0, tmp_path / "job"), dataset=dataset, log=lines.append)
    assert result.target == "gender" and "val gender F1" in lines[0]
    oof, logits, meta = read_logits(result.oof_path)
    assert meta == LogitsMeta.of_target(meta.rows_hash, "gender") and logits.shape == (len(oof), 2)
    assert pq.read_schema(result.oof_path).equals(logits_schema(2), check_metadata=False)
    assert check_logits_file(result.test_path) == len(dataset.eval)
    truth = dataset.train.set_index("image_key").loc[oof["image_key"], "label"].to_numpy()
    assert np.array_equal(oof["target"].to_numpy(dtype=int), truth)  # the 18-class label, as every file has
    # scored, and its best epoch chosen, on its attribute: macro F1 of the gender alone
    gender = target_labels(truth, "gender")
    from sklearn.metrics import f1_score

    assert result.val["macro_f1"] == pytest.approx(f1_score(gender, logits.argmax(1), average="macro"))
    assert result.val["gender_f1"] == result.val["macro_f1"] and np.isnan(result.val["age_f1"])


# --- the schema ---------------------------------------------------------------------------------------------

def test_each_file_declares_its_width_and_is_checked_against_it(tmp_path):
    people = make_people(10, N_SPLITS)
    frame, k = oof_frame(people, "age_only"), 3
    logits = np.zeros((len(frame), k), np.float32)
    write_logits(tmp_path / "age.parquet", logits_table(frame, logits, LogitsMeta.of_target("h", "age")))
    assert read_logits(tmp_path / "age.parquet")[2] == LogitsMeta("h", 3, "age")
    # an all-class file keeps the footer it always had: no target key
    write_logits(tmp_path / "all.parquet", logits_table(frame, np.zeros((len(frame), 18), np.float32), LogitsMeta("h")))
    assert set(pq.read_schema(tmp_path / "all.parquet").metadata) == {b"rows_hash", b"num_classes"}
    assert read_logits(tmp_path / "all.parquet")[2].target == "all"
    with pytest.raises(LogitsError, match=r"3 classes do not fit target 'gender' \(2 classes\)"):
        logits_table(frame, logits, LogitsMeta("h", 3, "gender"))
    # three logits in a file that does not say it holds a specialist's: refused, naming why
    table = logits_table(frame, logits, LogitsMeta.of_target("h", "age"))
    pq.write_table(table.replace_schema_metadata({"rows_hash": "h", "num_classes": "3"}), tmp_path / "bare.parquet")
    with pytest.raises(LogitsError, match=r"logits have 3 classes per row, expected 18 \(mask x gender x age\)"):
        read_logits(tmp_path / "bare.parquet")
    pq.write_table(table.replace_schema_metadata({"rows_hash": "h", "num_classes": "3", "target": "age"}),
                   tmp_path / "said.parquet")
    assert read_logits(tmp_path / "said.parquet")[1].shape == (len(frame), 3)
    assert gathered_name("oof", 0, "age") == "oof_age.parquet" and gathered_name("test", 2, "mask") == "test_mask_r2.parquet"
    assert gathered_name("oof") == "oof.parquet" and gathered_name("oof", 1) == "oof_r1.parquet"
    assert logits_schema() == LOGITS_SCHEMA


def test_logits_files_written_before_specialists_still_read(tmp_path):
    """A file as every earlier version wrote it: LOGITS_SCHEMA, footer rows_hash and num_classes only."""
    people = make_people(10, N_SPLITS)
    frame = oof_frame(people, "m")
    logits = np.random.default_rng(0).standard_normal((len(frame), NUM_CLASSES)).astype(np.float32)
    old = logits_table(frame, logits, LogitsMeta("h")).replace_schema_metadata({"rows_hash": "h", "num_classes": "18"})
    pq.write_table(old, tmp_path / "old.parquet")
    back, values, meta = read_logits(tmp_path / "old.parquet")
    assert meta == LogitsMeta("h", 18, "all") and np.array_equal(values, logits) and len(back) == len(frame)


# --- the per-attribute blend ---------------------------------------------------------------------------------

def experiment(tmp_path, specialists=AGE_ONLY, n_people=120, **blend_opts):
    people = make_people(n_people, N_SPLITS, seed=1)
    answers = make_targets(300, seed=2)
    exp = write_experiment(tmp_path, people, fake_models(people, answers, N_SPLITS, WEAK_AGE), answers, N_SPLITS,
                           **{"rounds": 10, **blend_opts})
    if specialists:
        write_specialists(exp, people, fake_specialists(people, answers, N_SPLITS, specialists))
    return exp, people, answers


@pytest.fixture(scope="module")
def with_age_only(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("specialists")
    exp, people, answers = experiment(tmp)
    return exp, load_blend_inputs(exp, load_experiment(exp), log=lambda s: None)


@pytest.fixture(scope="module")
def blended(with_age_only):
    """The blend CLI once on the experiment with an age specialist: its console and files."""
    exp, _ = with_age_only
    with contextlib.redirect_stdout(io.StringIO()) as console:
        assert blend.main(["--results", str(exp)]) == 0
    return exp, console.getvalue()


def test_the_specialist_takes_the_age_weight_and_the_per_attribute_blend_wins(blended):
    exp, _ = blended
    record = json.loads((exp / "blend" / "weights.json").read_text())
    assert record["method"].startswith("per_attr_"), record["method"]
    per = record["attribute_weights"]
    assert per["age"]["age_only"] == max(per["age"].values()) and per["age"]["age_only"] > 0.3
    assert "age_only" not in per["mask"] and "age_only" not in per["gender"]
    assert all(np.isclose(sum(per[a].values()), 1, atol=1e-5) for a in ATTRIBUTES)
    board = pd.read_csv(exp / "blend" / "leaderboard.csv")
    own = board.method.str.startswith("per_attr_")
    assert board.nested_macro_f1[own].max() > board.nested_macro_f1[~own].max() + 0.05
    assert board.nested_age_f1[own].max() > board.nested_age_f1[~own].max()


def test_per_attribute_methods_are_nested_a_held_out_folds_labels_never_reach_it(with_age_only):
    _, inputs = with_age_only
    oof, extra = inputs.oof, inputs.specialists.oof_logits()
    recipes = [r for r in plan_recipes(SPEC, specialists=True) if r.per_attribute_weights]
    assert {r.name for r in recipes} == {"per_attr_equal", "per_attr_equal+offsets", "per_attr_greedy",
                                         "per_attr_greedy+offsets"}
    shuffled = oof.target.copy()
    held = oof.fold == 0
    shuffled[held] = np.random.default_rng(0).permutation(shuffled[held])  # fold 0's labels, scrambled
    first = blending.predict_nested(recipes, oof.logits, oof.target, oof.fold, SPEC, lambda s: None, extra)
    again = blending.predict_nested(recipes, oof.logits, shuffled, oof.fold, SPEC, lambda s: None, extra)
    for r in recipes:
        assert np.array_equal(first[r.name].labels[held], again[r.name].labels[held]), r.name
    # ... while fitted on all rows, the scrambled labels do change what it learns
    greedy = recipe_by_name("per_attr_greedy+offsets")
    fits = [blending.fit_recipe(greedy, oof.logits, y, SPEC, {}, extra) for y in (oof.target, shuffled)]
    assert any(not np.array_equal(a, b) for a, b in zip(fits[0].per_attribute.weights, fits[1].per_attribute.weights)) \
        or any(not np.array_equal(a, b) for a, b in zip(fits[0].offsets, fits[1].offsets))


def test_a_per_attribute_blend_saved_and_loaded_predicts_what_it_did(with_age_only):
    _, inputs = with_age_only
    oof, special = inputs.oof, inputs.specialists
    extra = special.oof_logits()
    fitted = blending.fit_recipe(recipe_by_name("per_attr_greedy+offsets"), oof.logits, oof.target, SPEC, {}, extra)
    names, targets = oof.models + special.models, ("all",) * 3 + special.targets
    record = json.loads(json.dumps(fitted.to_record(names, targets)))
    assert record["targets"]["age_only"] == "age" and set(record["attribute_weights"]) == set(ATTRIBUTES)
    assert "age_only" not in record["attribute_weights"]["mask"]
    back = blending.FittedBlend.from_record(record, names)  # targets: the record's own
    same = blending.predict(back, oof.logits, extra).labels == blending.predict(fitted, oof.logits, extra).labels
    assert same.mean() > 0.99
    # the applier's per-model logits, split as predict takes them
    logits18, split = attributes.split_logits(targets, [*oof.logits, *extra["age"]])
    assert np.array_equal(blending.predict(back, logits18, split).labels, blending.predict(back, oof.logits, extra).labels)
    with pytest.raises(blending.BlendRecordError, match="age_only predicts age there, mask here"):
        blending.FittedBlend.from_record(record, names, ("all", "all", "all", "mask"))
    with pytest.raises(ValueError, match="specialists"):
        blending.predict(back, oof.logits, {})  # the specialist's logits are needed
    # a method of the 18 classes saved beside specialists: they are in the record with weight 0
    joint = blending.fit_recipe(recipe_by_name("soft_greedy"), oof.logits, oof.target, SPEC, {})
    record = joint.to_record(names, targets)
    assert record["weights"]["age_only"] == 0.0 and "attribute_weights" not in record
    again = blending.FittedBlend.from_record(record, names)
    assert np.array_equal(again.weights.round(6), joint.weights.round(6))


def test_the_blend_cli_reports_specialists_once_and_writes_their_weights(blended):
    exp, out = blended
    assert out.count("specialists age_only (age): the 4 per_attr_* methods use all 4 models; the 17 others need "
                     "18-class logits of every model and use the 3 all-class ones") == 1
    record = json.loads((exp / "blend" / "weights.json").read_text())
    assert record["targets"] == {"good": "all", "gender_eye": "all", "other": "all", "age_only": "age"}
    models = pd.read_csv(exp / "blend" / "models.csv").set_index("name")
    assert models.loc["age_only", "target"] == "age" and models.loc["age_only", "weight_age"] > 0.3
    assert models.loc["age_only", "weight_mask"] == 0 and "predicts" in out
    report = (exp / "report.html").read_text()
    assert "Weights per attribute" in report and "1 attribute specialist (age_only: age)" in report


def test_specialists_logits_are_averaged_over_repeats_like_the_others(tmp_path):
    exp, people, answers = experiment(tmp_path, n_people=60)
    spec_path = exp / "spec.yaml"
    import yaml

    raw = yaml.safe_load(spec_path.read_text())
    raw["folds"]["repeats"] = 2
    spec_path.write_text(yaml.safe_dump(raw))
    # repeat 1: every person held out in another fold, by models that err otherwise
    moved = people.assign(fold=(people.fold + 1 + people.person.str[:6].astype(int) % 2) % N_SPLITS)
    rows_hash = read_logits(exp / "oof.parquet")[2].rows_hash
    rng = np.random.default_rng(9)
    ids = pd.read_csv(tmp_path / "data" / "eval" / "info.csv").ImageID.to_numpy(dtype=object)
    for target, names in (("all", list(WEAK_AGE)), ("age", ["age_only"])):
        k = 18 if target == "all" else 3
        first, _, _ = read_logits(exp / gathered_name("oof", 0, target))
        meta = LogitsMeta.of_target(rows_hash, target)
        oof = rng.standard_normal((len(names) * len(people), k)).astype(np.float32)
        write_logits(exp / gathered_name("oof", 1, target), logits_table(
            pd.concat([oof_frame(moved, m) for m in names], ignore_index=True), oof, meta))
        frames = [eval_frame(ids, m, f) for m in names for f in range(N_SPLITS)]
        write_logits(exp / gathered_name("test", 1, target), logits_table(
            pd.concat(frames, ignore_index=True), np.zeros((len(frames) * len(ids), k), np.float32), meta))
    inputs = load_blend_inputs(exp, load_experiment(exp), log=lambda s: None)
    age = inputs.specialists.oof["age"]
    assert age.repeat_logits.shape == (2, 1, len(people), 3)
    repeat0 = read_logits(exp / "oof_age.parquet")[1]
    repeat1 = read_logits(exp / "oof_age_r1.parquet")[1]
    keys = read_logits(exp / "oof_age.parquet")[0].image_key.to_numpy()
    at = pd.Index(keys).get_indexer(age.image_key)
    keys1 = pd.Index(read_logits(exp / "oof_age_r1.parquet")[0].image_key).get_indexer(age.image_key)
    assert np.allclose(age.logits[0], (repeat0[at] + repeat1[keys1]) / 2)
    result = blending.fit_blend(inputs, SPEC, log=lambda s: None, recipes=(recipe_by_name("per_attr_greedy"),))
    assert result.expectation is not None and result.chosen.expected is not None


# --- without specialists, nothing changes ---------------------------------------------------------------------

GOLDEN = REPO / "tests" / "helpers" / "blend_before_specialists.json"


def test_an_experiment_without_specialists_blends_exactly_as_before(tmp_path):
    from tests.test_blend import make_experiment

    exp = make_experiment(tmp_path)
    truth = tmp_path / "data" / "truth" / "eval_answers.csv"
    with contextlib.redirect_stdout(io.StringIO()) as console:
        assert blend.main(["--results", str(exp), "--truth", str(truth)]) == 0
    assert "specialists" not in console.getvalue() and "per_attr" not in console.getvalue()
    board = pd.read_csv(exp / "blend" / "leaderboard.csv")
    record = json.loads((exp / "blend" / "weights.json").read_text())
    golden = json.loads(GOLDEN.read_text())
    assert board.method.tolist() == golden["methods"]
    for column in ("nested_macro_f1", "in_sample_macro_f1", "truth_macro_f1"):
        assert board[column].round(10).tolist() == golden[column], column
    assert (record["method"], record["weights"], record["offsets"]) == (golden["chosen"], golden["weights"],
                                                                        golden["offsets"])
    assert "targets" not in record and "attribute_weights" not in record
    answers = pd.read_csv(exp / "blend" / "submission.csv").ans.tolist()
    assert hashlib.sha256(",".join(map(str, answers)).encode()).hexdigest() == golden["submission_sha256"]
    assert list(pd.read_csv(exp / "blend" / "models.csv").columns) == [
        "name", "experiment", "model", "oof_macro_f1", "oof_macro_f1_low", "oof_macro_f1_high", "weight",
        "temperature", "oof_optimistic"]
    assert plan_recipes(BlendSpec()) == plan_recipes(BlendSpec(), specialists=False)
    assert not any(r.per_attribute_weights for r in plan_recipes(BlendSpec()))


def test_a_specialist_scored_alone_is_scored_on_its_attribute():
    from tasks.metrics import score_target

    labels = np.array([0, 5, 10, 17, 3, 8])
    logits = np.eye(3, dtype=np.float32)[target_labels(labels, "age")]
    own = score_target(labels, logits, "age")
    assert own.macro_f1 == own.age_f1 == 1.0 and np.isnan(own.mask_f1) and np.isnan(own.gender_f1)
    assert score_target(labels, np.eye(18)[labels], "all") == score(labels, labels)


def test_the_weights_table_names_the_models_when_offsets_are_per_attribute():
    """The offsets' class names once took the place of the model names in this table (a blend
    choosing soft_equal+attr+offsets showed '<30, 30-59, >=60' as its models)."""
    import re

    from orchestrator.analysis.reporting.page import weights_section

    w = {"weights": {"a": 0.5, "b": 0.3, "c": 0.1, "age_only": 0.1}, "vote": "soft",
         "offsets": {"mask": [0.1, 0, 0], "gender": [0, 0], "age": [0, 0.2, 0]}}
    assert re.findall(r'<td class="text">([^<]*)</td>', weights_section(w)) == ["a", "b", "c", "age_only"]


@pytest.mark.slow
def test_a_run_with_a_specialist_gathers_blends_and_reinfers_it(synth_root, tmp_path, capsys):
    """On Ray: 2 folds x (an all-class model + a mask specialist), gathered per target, blended
    with the per-attribute methods, then its test logits re-inferred from the saved weights."""
    from orchestrator.cluster.experiment_run import run_experiment
    from tests.helpers.specs import shrunk_spec

    spec = shrunk_spec(synth_root, tmp_path, "models=[{backbone: test_convnext}, {backbone: test_convnext, "
                       "name: mask_only, train: {target: mask}}]", name="spec")
    summary = run_experiment(spec)
    assert len(summary.done) == 4 and not summary.failed
    exp = spec.out_dir
    assert set(read_logits(exp / "oof.parquet")[0].model) == {"test_convnext"}
    frame, logits, meta = read_logits(exp / "oof_mask.parquet")
    assert set(frame.model) == {"mask_only"} and logits.shape[1] == 3 and meta.target == "mask"
    board = pd.read_csv(exp / "leaderboard.csv", dtype={"fold": str}).set_index(["model", "fold"])
    assert board.loc[("mask_only", "mean"), "target"] == "mask" and np.isnan(board.loc[("mask_only", "0"), "age_f1"])
    before = read_logits(exp / "test_mask.parquet")[1]
    assert blend.main(["--results", str(exp), "--reinfer", "--no-tta"]) == 0
    out = capsys.readouterr().out
    assert "specialists mask_only (mask): the 4 per_attr_* methods use all 2 models" in out
    after = read_logits(exp / "test_mask.parquet")[1]
    assert np.allclose(before, after, atol=1e-4)  # the spec has no TTA: the same logits again
    record = json.loads((exp / "blend" / "weights.json").read_text())
    assert record["targets"] == {"test_convnext": "all", "mask_only": "mask"}
    # predict on the eval photos answers as the submission, specialist included (per-attribute or not)
    from orchestrator import predict

    assert predict.main([str(synth_root / "eval" / "images"), "--results", str(exp), "--out",
                         str(tmp_path / "pred.csv")]) == 0
    answers = pd.read_csv(tmp_path / "pred.csv").assign(ImageID=lambda t: t.path.map(lambda p: Path(p).name))
    submission = pd.read_csv(exp / "blend" / "submission.csv").set_index("ImageID")
    assert (answers.set_index("ImageID")["class"] == submission.loc[answers.ImageID, "ans"].to_numpy()).all()
