"""The blend CLI end to end on real Parquet files, and the nested estimate's honesty."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import f1_score

from orchestrator import blend
from orchestrator.analysis.ensembles import fitting as blending
from orchestrator.analysis.ensembles import outputs as blend_outputs
from orchestrator.analysis.ensembles.uncertainty import Interval, PersonBootstrap, person_bootstrap
from orchestrator.analysis.results import BlendInputs, EvalLogits, OofLogits
from tasks.labels import NUM_CLASSES
from tasks.logits import LOGITS_SCHEMA, LogitsMeta, logits_table, read_logits, write_logits
from tasks.spec.experiment import BlendSpec
from tests.helpers.fake_logits import fake_models, make_people, make_targets, write_experiment

N_SPLITS = 4
MODELS = {"good": {}, "age_eye": {"strength": (2.0, 1.5, 2.0)}, "gender_eye": {"strength": (2.5, 3.5, 0.8)},
          "noise": {"strength": (0.0, 0.0, 0.0)}}
FAST = {"rounds": 15}


def make_experiment(tmp_path, models=MODELS, n_people=120, name="exp", **blend_opts):
    people = make_people(n_people, N_SPLITS, seed=1)
    answers = make_targets(300, seed=2)
    fake = fake_models(people, answers, N_SPLITS, models)
    return write_experiment(tmp_path, people, fake, answers, N_SPLITS, name=name, **{**FAST, **blend_opts})


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = blend.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def blended(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("blended")
    exp = make_experiment(tmp)
    truth = tmp / "data" / "truth" / "eval_answers.csv"
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        code = blend.main(["--results", str(exp), "--truth", str(truth)])
    assert code == 0
    (tmp / "console.txt").write_text(console.getvalue())  # for the tests of what it printed
    return exp, truth


def test_submission_has_every_eval_image_once_in_info_order(blended):
    exp, _ = blended
    info = pd.read_csv(exp.parents[1] / "data" / "eval" / "info.csv")
    sub = pd.read_csv(exp / "blend" / "submission.csv")
    assert list(sub.columns) == ["ImageID", "ans"]
    assert sub.ImageID.tolist() == info.ImageID.tolist()
    assert sub.ImageID.is_unique
    assert sub.ans.dtype.kind == "i" and sub.ans.between(0, NUM_CLASSES - 1).all()


def test_method_is_chosen_by_nested_score_and_recorded(blended):
    exp, _ = blended
    board = pd.read_csv(exp / "blend" / "leaderboard.csv")
    weights = json.loads((exp / "blend" / "weights.json").read_text())
    assert set(board.method) == {r.name for r in blending.plan_recipes(BlendSpec(**FAST))}
    chosen = board[board.chosen]
    assert len(chosen) == 1 and chosen.method.iloc[0] == weights["method"]
    assert chosen.nested_macro_f1.iloc[0] == board.nested_macro_f1.max()
    assert weights["nested"]["macro_f1"] == pytest.approx(chosen.nested_macro_f1.iloc[0])
    assert sum(weights["weights"].values()) == pytest.approx(1.0, abs=1e-5)
    assert set(weights["weights"]) == set(MODELS)
    # The saved nested predictions are the ones the leaderboard scored.
    oof = pd.read_parquet(exp / "blend" / "oof_predictions.parquet")
    assert f1_score(oof.target, oof.nested, average="macro") == pytest.approx(chosen.nested_macro_f1.iloc[0])


def test_truth_score_is_the_submissions_real_macro_f1(blended, capsys):
    exp, truth = blended
    code, out, _ = run_cli(capsys, "--results", exp, "--truth", truth)
    sub = pd.read_csv(exp / "blend" / "submission.csv")
    answers = pd.read_csv(truth).set_index("ImageID").ans.reindex(sub.ImageID)
    real = f1_score(answers, sub.ans, average="macro")
    assert code == 0
    line = re.search(r"submission vs .*: macro F1 ([0-9.]+).*nested estimate ([0-9.]+)", out)
    assert line and float(line.group(1)) == pytest.approx(real, abs=5e-5)
    board = pd.read_csv(exp / "blend" / "leaderboard.csv")
    assert board[board.chosen].truth_macro_f1.iloc[0] == pytest.approx(real)


INTERVAL = r"(\d\.\d{4}) \[(\d\.\d{3}), (\d\.\d{3})\]"


def test_every_macro_f1_has_its_person_bootstrap_interval_in_the_files(blended):
    exp, _ = blended
    board = pd.read_csv(exp / "blend" / "leaderboard.csv")
    weights = json.loads((exp / "blend" / "weights.json").read_text())
    columns = list(board.columns)
    for prefix in ("in_sample", "nested"):
        point, low, high = (f"{prefix}_macro_f1{s}" for s in ("", "_low", "_high"))
        assert columns[columns.index(point) + 1:columns.index(point) + 3] == [low, high]  # next to the point
        assert ((board[low] <= board[point]) & (board[point] <= board[high]) & (board[low] < board[high])).all()
        chosen = board[board.chosen].iloc[0]
        assert weights[prefix]["macro_f1_interval"] == pytest.approx([chosen[low], chosen[high]], abs=1e-5)
    # The recorded nested interval is the person bootstrap of the saved nested predictions.
    oof = pd.read_parquet(exp / "blend" / "oof_predictions.parquet")
    again = person_bootstrap(oof.target.to_numpy(), oof.nested.to_numpy(), oof.person.to_numpy())
    assert weights["nested"]["macro_f1_interval"] == pytest.approx([again.low, again.high], abs=1e-5)
    assert weights["bootstrap"] == {"unit": "person", "resamples": 1000, "seed": 0, "level": 0.95,
                                    "interval": "percentile"}


def test_chosen_method_is_compared_with_the_equal_vote_and_the_single_model_on_the_same_people(blended):
    exp, _ = blended
    board = pd.read_csv(exp / "blend" / "leaderboard.csv").set_index("method")
    weights = json.loads((exp / "blend" / "weights.json").read_text())
    versus = weights["versus"]
    assert [(v["method"], v["baseline"]) for v in versus] == [("soft_equal", "the equal soft vote"),
                                                            ("single", "the best single model")]
    nested = board.nested_macro_f1
    for v in versus:
        assert v["chosen"] == (v["method"] == weights["method"])
        if v["chosen"]:
            assert v["difference"] is None and v["interval"] is None and not v["clearly_better"]
            continue
        assert v["difference"] == pytest.approx(nested[weights["method"]] - nested[v["method"]], abs=1e-5)
        low, high = v["interval"]
        assert low <= v["difference"] <= high and v["clearly_better"] == (low > 0)
    assert "versus_simpler" not in weights  # replaced by the two comparisons
    # leaderboard.csv gives every method, the equal vote's row too, its paired test against both
    # (empty on the baseline's own row); the chosen row's is weights.json's.
    for v, column in zip(versus, ("nested_minus_equal_vote_macro_f1", "nested_minus_single_macro_f1")):
        assert np.isnan(board.loc[v["method"], column])
        others = board.drop(index=v["method"])
        assert others[column].to_numpy() == pytest.approx((others.nested_macro_f1 - nested[v["method"]]).to_numpy())
        assert (others[f"{column}_low"] <= others[column]).all() and (others[column] <= others[f"{column}_high"]).all()
        if not v["chosen"]:
            row = board.loc[weights["method"]]
            assert [row[f"{column}_low"], row[f"{column}_high"]] == pytest.approx(v["interval"], abs=1e-5)


def test_console_shows_intervals_nested_first_and_both_comparisons(blended):
    exp, _ = blended
    out = (exp.parents[1] / "console.txt").read_text()
    weights = json.loads((exp / "blend" / "weights.json").read_text())
    low, high = weights["nested"]["macro_f1_interval"]
    header = re.search(r"^method +nested macro F1 \[95%\] +accuracy +in-sample +true +chosen$", out, re.M)
    assert header, out
    row = re.search(rf"^{re.escape(weights['method'])} +{INTERVAL} +([0-9.]+) +([0-9.]+) +([0-9.]+) +<-$", out, re.M)
    assert row and float(row.group(2)) == pytest.approx(low, abs=6e-4) and float(row.group(3)) == pytest.approx(
        high, abs=6e-4)
    assert float(row.group(4)) == pytest.approx(weights["nested"]["accuracy"], abs=6e-5)
    assert float(row.group(5)) == pytest.approx(weights["in_sample"]["macro_f1"], abs=6e-5)
    # Every line of the table fits about 100 columns (the longest method name is 37 characters).
    table = out[header.start():].split("\nmodels")[0].splitlines()
    assert len(table) == len(blending.plan_recipes(BlendSpec(**FAST))) + 1 and max(map(len, table)) <= 100
    assert re.search(rf"^chosen: {re.escape(weights['method'])} \(nested macro F1 {INTERVAL}, in-sample {INTERVAL}\)",
                     out, re.M)
    for v in weights["versus"]:
        line = re.search(rf"^  versus {re.escape(v['method'])} \({v['baseline']}\): (.*)$", out, re.M)
        if v["chosen"]:
            assert line.group(1) == f"the chosen method is {v['baseline']} itself"
            continue
        verdict = "clearly better, by" if v["clearly_better"] else "not clearly better,"
        low, high = v["interval"]
        assert line.group(1) == f"{verdict} {v['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"
    assert "  (the chosen minus each in nested macro F1, paired: person bootstrap, 95%)" in out


def _inputs(n_people: int, models: dict, seed: int = 0) -> BlendInputs:
    people = make_people(n_people, N_SPLITS, seed=seed)
    answers = make_targets(50, seed)
    fake = fake_models(people, answers, N_SPLITS, models)
    names = tuple(fake.oof)
    o = OofLogits(names, np.stack(list(fake.oof.values())), people.image_key.to_numpy(), people.person.to_numpy(),
                  people.fold.to_numpy(), people.target.to_numpy(), "h", ())
    t = EvalLogits(names, np.stack([x.mean(0) for x in fake.test.values()]), np.arange(50).astype(str), "h", ())
    return BlendInputs(o, t, ())


def test_nested_estimate_is_below_in_sample_when_weights_overfit():
    # Many similar weak models and few people: greedy weights, refinement and offsets fit noise.
    weak = {f"m{i}": {"strength": (1.2, 1.0, 0.5), "noise": 1.2} for i in range(10)}
    result = blending.fit_blend(_inputs(40, weak, seed=3), BlendSpec(rounds=40, decode="joint", temperature=False))
    f1 = {r.fitted.recipe.name: (r.in_sample.scores.macro_f1, r.nested.scores.macro_f1) for r in result.methods}
    for name in ("soft_greedy_refined", "soft_greedy_refined+offsets"):
        assert f1[name][0] > f1[name][1] + 0.02
    # Nothing is fitted for an equal vote: its nested and in-sample scores are the same rows' score.
    assert f1["soft_equal"][0] == pytest.approx(f1["soft_equal"][1])


def _rewrite(path, keep=None, edit=None, rows_hash=None):
    frame, logits, meta = read_logits(path)
    mask = np.ones(len(frame), bool) if keep is None else keep(frame)
    frame, logits = frame[mask].reset_index(drop=True), logits[mask]
    if edit is not None:
        frame, logits = edit(frame, logits)
    write_logits(path, logits_table(frame, logits, LogitsMeta(rows_hash or meta.rows_hash)))


def test_partial_backbone_is_excluded_with_a_printed_reason(tmp_path, capsys):
    exp = make_experiment(tmp_path, models={**MODELS, "never_ran": {}})
    _rewrite(exp / "oof.parquet", keep=lambda f: ~((f.model == "age_eye") & (f.fold == 2)))
    _rewrite(exp / "oof.parquet", keep=lambda f: f.model != "never_ran")
    _rewrite(exp / "test.parquet", keep=lambda f: f.model != "never_ran")
    code, out, _ = run_cli(capsys, "--results", exp, "--set", "blend.decode=joint")
    assert code == 0
    assert re.search(r"excluded model 'age_eye': OOF covers \d+ of \d+ training images \(fold 2 missing\)", out)
    assert "excluded model 'never_ran': no OOF rows" in out
    weights = json.loads((exp / "blend" / "weights.json").read_text())
    assert set(weights["weights"]) == {"good", "gender_eye", "noise"}
    assert {e["model"] for e in weights["excluded"]} == {"age_eye", "never_ran"}


def _duplicate(f, x):
    return pd.concat([f, f.iloc[:3]], ignore_index=True), np.concatenate([x, x[:3]])


def _flip_target(f, x):
    f = f.copy()
    first = f.index[f.model == "good"][0]
    f.loc[first, "target"] = (int(f.target[first]) + 1) % NUM_CLASSES
    return f, x


def _move_person(f, x):
    f = f.copy()
    image = f.image_key == f.image_key[0]  # one image of a person, in every backbone alike
    f.loc[image, "fold"] = (int(f.fold[0]) + 1) % N_SPLITS
    return f, x


def _write_raw(path, columns: tuple[str, ...], n_classes: int):
    frame, logits, meta = read_logits(path)
    table = pa.table({**{c: pa.array(frame[c], type=LOGITS_SCHEMA.field(c).type) for c in columns},
                      "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits[:, :n_classes].ravel()), n_classes)})
    pq.write_table(table.replace_schema_metadata({"rows_hash": meta.rows_hash, "num_classes": str(n_classes)}), path)


KEYS = ("experiment", "model", "fold", "split", "image_key", "person", "target")


@pytest.mark.parametrize("breakage, message", [
    (lambda exp: _rewrite(exp / "oof.parquet", edit=_duplicate), r"oof\.parquet: 3 duplicate rows"),
    (lambda exp: _rewrite(exp / "test.parquet", rows_hash="0123456789abcdef"), r"different data, folds or seeds"),
    (lambda exp: _write_raw(exp / "oof.parquet", KEYS, 10),
     r"oof\.parquet: cannot be read as maskfold logits: logits have 10 classes per row, expected 18"),
    (lambda exp: _write_raw(exp / "test.parquet", KEYS[:-1], NUM_CLASSES),
     r"test\.parquet: cannot be read as maskfold logits: schema differs from LOGITS_SCHEMA: missing target$"),
    (lambda exp: _rewrite(exp / "oof.parquet", edit=_flip_target), r"models disagree on the target"),
    (lambda exp: _rewrite(exp / "oof.parquet", edit=_move_person), r"held out in several folds"),
    (lambda exp: (exp / "test.parquet").unlink(), r"test\.parquet: not found"),
    (lambda exp: (exp / "manifest.json").write_text('{"rows_hash": "0123456789abcdef"}'),
     r"oof\.parquet was made for other data or folds .*manifest\.json says 0123456789abcdef"),
], ids=["duplicates", "two_hashes", "class_count", "schema", "labels_disagree", "person_split", "missing_file",
        "stale_manifest"])
def test_bad_input_is_one_clear_error_and_keeps_earlier_outputs(blended, tmp_path, capsys, breakage, message):
    exp = tmp_path / "exp"
    shutil.copytree(blended[0], exp)  # with the earlier run's blend/ outputs
    before = {p.name: p.read_bytes() for p in (exp / "blend").iterdir()}
    breakage(exp)
    code, _, err = run_cli(capsys, "--results", exp)
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(message, err), err
    assert {p.name: p.read_bytes() for p in (exp / "blend").iterdir()} == before
    assert not [p for p in exp.iterdir() if p.name.startswith(".blend")]


@pytest.mark.parametrize("override, message", [
    ("blend.rounds=0", r"spec\.yaml: blend\.rounds: Input should be greater than or equal to 1"),
    ("blend.metrc=accuracy", r"spec\.yaml: blend\.metrc: unknown field"),
    ("blend.decode=sideways", r"spec\.yaml: blend\.decode: Input should be 'joint', 'per_attribute' or 'both'"),
])
def test_bad_override_names_the_file_and_field(tmp_path, capsys, override, message):
    exp = make_experiment(tmp_path)
    code, _, err = run_cli(capsys, "--results", exp, "--set", override)
    assert code == 2 and re.search(message, err), err
    assert not (exp / "blend").exists()


def test_overrides_and_metric_shape_the_methods(tmp_path, capsys):
    exp = make_experiment(tmp_path)
    code, out, _ = run_cli(capsys, "--results", exp, "--metric", "log_loss", "--set", "blend.refine=false")
    assert code == 0
    board = pd.read_csv(exp / "blend" / "leaderboard.csv")
    assert not board.method.str.contains("hard|offsets|attr|refined").any()
    assert board[board.chosen].nested_log_loss.iloc[0] == board.nested_log_loss.min()
    assert json.loads((exp / "blend" / "weights.json").read_text())["metric"] == "log_loss"


def test_default_results_dir_is_the_most_recent_experiment(tmp_path, capsys, monkeypatch):
    old = make_experiment(tmp_path, name="older")
    new = make_experiment(tmp_path, name="newer")
    os.utime(old / "oof.parquet", (time.time() + 60,) * 2)  # "older" was written last after all
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "--set", "blend.decode=joint")
    assert code == 0
    assert "experiment: results/older" in out
    assert (old / "blend" / "submission.csv").exists() and not (new / "blend").exists()


def _as_previous_version(path) -> None:
    """Rewrite a logits file as the previous version wrote it: the model's name in a column
    `backbone`, the rows hash under the key `spec_hash`."""
    table = pq.read_table(path)
    meta = {(b"spec_hash" if k == b"rows_hash" else k): v for k, v in table.schema.metadata.items()}
    names = ["backbone" if n == "model" else n for n in table.schema.names]
    pq.write_table(table.rename_columns(names).replace_schema_metadata(meta), path)


def test_logits_written_by_the_previous_version_still_read_and_blend(tmp_path, capsys):
    from tasks.logits import check_logits_file

    exp = make_experiment(tmp_path)
    before = read_logits(exp / "oof.parquet")
    for name in ("oof.parquet", "test.parquet"):
        _as_previous_version(exp / name)
    assert "backbone" in pq.read_schema(exp / "oof.parquet").names  # really the old layout
    frame, logits, meta = read_logits(exp / "oof.parquet")
    pd.testing.assert_frame_equal(frame, before[0])
    assert np.array_equal(logits, before[1]) and meta == before[2]
    assert check_logits_file(exp / "test.parquet") > 0
    code, out, err = run_cli(capsys, "--results", exp)
    assert code == 0, err
    assert "chosen:" in out


def test_summary_says_when_the_choice_is_not_clearly_better_and_whom_it_is_compared_with():
    inputs = _inputs(60, {"a": {}, "b": {"strength": (2.0, 1.5, 2.0)}}, seed=5)
    result = blending.fit_blend(inputs, BlendSpec(rounds=5, decode="joint", choose="best"))
    name = result.chosen.fitted.recipe.name
    unsure = blending.Comparison("soft_equal", "the equal soft vote", Interval(0.006, -0.011, 0.022))
    sure = blending.Comparison("single", "the best single model", Interval(0.03, 0.01, 0.05))
    lines = blend_outputs.summary_lines(dataclasses.replace(result, versus=(unsure, sure)))
    assert lines[0].startswith(f"chosen: {name} (nested macro F1 ")
    assert lines[1].startswith("  expected on new people: not estimated (it needs folds.repeats: 2")
    assert lines[2:] == ["  versus soft_equal (the equal soft vote): not clearly better, +0.006 [-0.011, +0.022]",
                         "  versus single (the best single model): clearly better, by +0.030 [+0.010, +0.050]",
                         "  (the chosen minus each in nested macro F1, paired: person bootstrap, 95%)"]


def _chosen_first(result, name: str) -> list:
    """The ranking as if `name` had scored best (the choice is the first)."""
    return sorted(result.methods, key=lambda r: r.fitted.recipe.name != name)


def test_the_equal_vote_chosen_is_said_so_and_still_compared_with_the_single_model():
    inputs = _inputs(60, {"a": {}, "b": {"strength": (2.0, 1.5, 2.0)}}, seed=5)
    result = blending.fit_blend(inputs, BlendSpec(rounds=5, decode="both"))
    boot = PersonBootstrap.draw(inputs.oof.target, inputs.oof.person)
    by_name = {r.fitted.recipe.name: r for r in result.methods}
    ranked = _chosen_first(result, "soft_equal")
    equal, single = blending.versus_baselines(boot, ranked)
    assert (equal.method, equal.is_chosen, equal.difference, equal.clearly_better) == ("soft_equal", True, None, False)
    assert single.method == "single" and single.difference.estimate == pytest.approx(
        by_name["soft_equal"].nested.scores.macro_f1 - by_name["single"].nested.scores.macro_f1)
    lines = blend_outputs.summary_lines(dataclasses.replace(result, methods=tuple(ranked), chosen_index=0,
                                                            choice=None, versus=(equal, single)))
    assert lines[2] == "  versus soft_equal (the equal soft vote): the chosen method is the equal soft vote itself"
    assert re.fullmatch(r"  versus single \(the best single model\): (not )?clearly better,( by)? [+-]0\.\d{3} \[.*\]",
                        lines[3])
    record = blend_outputs.comparison_record(equal)
    assert record == {"method": "soft_equal", "baseline": "the equal soft vote", "chosen": True, "difference": None,
                      "interval": None, "clearly_better": False}
    # soft_equal+attr is not the plain equal vote: it is compared with it (and with single), paired by person.
    attr = _chosen_first(result, "soft_equal+attr")
    versus = blending.versus_baselines(boot, attr)
    assert [c.method for c in versus] == ["soft_equal", "single"] and not any(c.is_chosen for c in versus)
    assert versus[0].difference == boot.difference(by_name["soft_equal+attr"].nested.labels,
                                                   by_name["soft_equal"].nested.labels)
    # The best single model chosen: compared with the equal vote, and said to be the single model.
    versus = blending.versus_baselines(boot, _chosen_first(result, "single"))
    assert [(c.method, c.is_chosen) for c in versus] == [("soft_equal", False), ("single", True)]
    # A spec that decodes per attribute only: its equal vote is soft_equal+attr.
    only_attr = blending.fit_blend(inputs, BlendSpec(rounds=5, decode="per_attribute"))
    names = {r.fitted.recipe.name for r in only_attr.methods}
    assert "soft_equal" not in names
    versus = blending.versus_baselines(boot, _chosen_first(only_attr, "soft_equal+attr"))
    assert [(c.method, c.is_chosen) for c in versus] == [("soft_equal+attr", True), ("single", False)]


def test_a_fitted_method_saved_and_loaded_predicts_what_it_did():
    """weights.json is what audit, pseudo labels and the report apply: reading it back gives
    the same method, weights and decisions (offsets as saved, to 3 decimals)."""
    inputs = _inputs(150, {"a": {}, "b": {"strength": (2.0, 1.5, 0.8)}, "c": {"noise": 1.5}}, seed=4)
    oof = inputs.oof
    spec = BlendSpec(rounds=20, decode="both")
    fitted = blending.fit_all(blending.plan_recipes(spec), oof.logits, oof.target, spec)
    for name in ("hard_weighted", "soft_greedy_refined_temp+attr", "soft_greedy_refined_temp+offsets"):
        record = json.loads(json.dumps(fitted[name].to_record(oof.models)))
        back = blending.FittedBlend.from_record(record, oof.models)
        assert back.recipe == fitted[name].recipe and back.recipe.name == name
        assert np.allclose(back.weights, fitted[name].weights, atol=1e-6)
        assert all(np.allclose(b, np.round(f, 3)) for b, f in zip(back.offsets, fitted[name].offsets))
        same = blending.predict(back, oof.logits).labels == blending.predict(fitted[name], oof.logits).labels
        assert same.mean() > (0.99 if "offsets" in name else 0.999999), name
    # Loaded for models in another order, one of them unweighted and absent: weights follow the names.
    record = {**fitted["soft_greedy"].to_record(oof.models), "weights": {"a": 0.25, "b": 0.0, "c": 0.75}}
    back = blending.FittedBlend.from_record(record, ("c", "a"))
    assert back.weights.tolist() == [0.75, 0.25] and back.temperatures.tolist() == [1.0, 1.0]
    with pytest.raises(blending.BlendRecordError, match="not one this version plans"):
        blending.FittedBlend.from_record({**record, "method": "stacked_lightgbm"}, oof.models)
    with pytest.raises(blending.BlendRecordError, match="weighs models these results do not hold: c"):
        blending.FittedBlend.from_record(record, ("a", "b"))


def test_one_se_submits_the_simplest_method_chance_cannot_tell_from_the_top():
    from orchestrator.analysis.ensembles.recipes import SINGLE, Recipe

    assert Recipe("soft", "equal", decode="per_attribute").complexity == Recipe("hard", "equal").complexity == 0
    assert SINGLE.complexity == Recipe("soft", "greedy").complexity == 1
    assert Recipe("soft", "greedy_refined", temperature=True, offsets=True).complexity == 4
    inputs = _inputs(60, {"a": {}, "b": {"strength": (2.0, 1.5, 2.0)}}, seed=5)
    best = blending.fit_blend(inputs, BlendSpec(rounds=5, decode="joint", choose="best"))
    rule = blending.fit_blend(inputs, BlendSpec(rounds=5, decode="joint", choose="one_se"))
    names = [r.fitted.recipe.name for r in rule.methods]
    assert names == [r.fitted.recipe.name for r in best.methods] and best.chosen_index == 0  # same ranking
    boot = PersonBootstrap.draw(inputs.oof.target, inputs.oof.person)
    top = rule.methods[0]

    def within_noise(r) -> bool:
        gap = top.nested.scores.macro_f1 - r.nested.scores.macro_f1
        return gap <= np.std(boot.macro_f1s(top.nested.labels) - boot.macro_f1s(r.nested.labels))

    close = [r for r in rule.methods if within_noise(r)]
    assert rule.chosen_index > 0 and rule.chosen in close  # this draw: the top is not the simplest close one
    assert rule.chosen.fitted.recipe.complexity == min(r.fitted.recipe.complexity for r in close)
    assert rule.choice.top == names[0] and rule.choice.margin == pytest.approx(
        top.nested.scores.macro_f1 - rule.chosen.nested.scores.macro_f1) and rule.choice.margin <= rule.choice.noise
    lines = blend_outputs.summary_lines(rule)
    assert lines[0].startswith(f"chosen: {rule.chosen.fitted.recipe.name} (")
    assert lines[1].startswith(f"  not the top nested score: {names[0]} is {rule.choice.margin:.4f} higher")
    board = blend_outputs.leaderboard(rule)
    assert board.chosen.tolist() == [i == rule.chosen_index for i in range(len(names))]
    assert not any(line.startswith("  not the top") for line in blend_outputs.summary_lines(best))


def test_how_the_blend_chooses_is_in_no_hash():
    from tasks.spec.load import load_spec
    from tests.helpers.specs import REPO

    spec = load_spec(REPO / "experiments" / "demo.yaml", check_data=False)  # a fresh clone has no data/synth
    other = load_spec(REPO / "experiments" / "demo.yaml", ["blend.choose=one_se"], check_data=False)
    assert (spec.blend.choose, other.blend.choose) == ("best", "one_se") and spec.spec_hash() == other.spec_hash()
    assert spec.shared_hash() == other.shared_hash()
