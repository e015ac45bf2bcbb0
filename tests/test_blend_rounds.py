"""Blending several experiments (rounds) as one pool, the checks that they are comparable, and
the "OOF optimistic" marks of a round whose pseudo labels came from models that saw every fold."""
from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from orchestrator import blend, report
from orchestrator.analysis.ensembles.fitting import fit_blend
from orchestrator.analysis.results import BlendInputs, EvalLogits, OofLogits, load_blend_inputs
from orchestrator.analysis.results_folder import load_experiment
from orchestrator.cluster.gather import saved_oof_optimistic, write_leaderboard
from tasks.job_io import JobResult
from tasks.spec.experiment import BlendSpec
from tests.helpers.fake_logits import fake_models, make_people, make_targets, write_experiment, write_folds

N_SPLITS = 3
# Six methods, not seventeen: pooling is what is tested here, not the methods (test_blend.py).
FAST = {"rounds": 5, "decode": "joint", "refine": False, "temperature": False, "class_offsets": False}
ROUND1 = {"a": {}, "b": {"strength": (2.0, 1.5, 2.0)}}
# Round 2 repeats the name "a" and sees better (as a pseudo-label round would): the blend weighs it.
ROUND2 = {"a": {"strength": (3.5, 3.0, 2.2)}, "c": {"strength": (2.5, 3.5, 1.5)}}
OPTIMISTIC = {"per_fold": False}  # pseudo.source is added per test: the round-1 folder


def world(n_people: int = 60, n_splits: int = N_SPLITS):
    return make_people(n_people, n_splits, seed=1), make_targets(60, seed=2)


def write_round(tmp, name, models, people, answers, n_splits=N_SPLITS, seed=0, pseudo=None):
    exp = write_experiment(tmp, people, fake_models(people, answers, n_splits, models, seed=seed), answers,
                           n_splits, name=name, pseudo=pseudo, **FAST)
    write_folds(exp, people)
    return exp


def write_run_board(exp, models) -> None:
    """The run's leaderboard.csv, as gather writes it (fold scores made up, fixed per model)."""
    results = [JobResult(exp.name, m, "resnet18", k, 0, 3, 4, False, {"macro_f1": 0.1 * (i + 1) + 0.01 * k,
                         "accuracy": 0.5, "mask_f1": 0.5, "gender_f1": 0.5, "age_f1": 0.5}, 1.0, 1, 1, 1, "cpu", 9.0,
                         "", "", "", "") for i, m in enumerate(models) for k in range(N_SPLITS)]
    write_leaderboard(exp / "leaderboard.csv", results, saved_oof_optimistic(exp))


def run_cli(main, *args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def weights_of(folder) -> dict:
    return json.loads((folder / "blend" / "weights.json").read_text())


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    """round1 (honest) and round2 (per_fold: false), pooled with --truth into --out both/."""
    tmp = tmp_path_factory.mktemp("rounds")
    people, answers = world()
    one = write_round(tmp, "round1", ROUND1, people, answers)
    two = write_round(tmp, "round2", ROUND2, people, answers, seed=1, pseudo={"source": str(one), **OPTIMISTIC})
    write_run_board(one, ROUND1)
    write_run_board(two, ROUND2)
    truth = tmp / "data" / "truth" / "eval_answers.csv"
    code, out, err = run_cli(blend.main, "--results", one, "--results", two, "--truth", truth, "--out", tmp / "both")
    assert code == 0, err
    return tmp / "both", one, two, out, err


@pytest.fixture
def no_report(monkeypatch):
    """The blend without its report (matplotlib takes seconds here): for tests of the blend's files."""
    written = []
    monkeypatch.setattr("orchestrator.analysis.reporting.page.write_report", lambda exp_dir, *_: written.append(exp_dir))
    return written


def test_two_experiments_blend_as_one_pool_of_named_models(rounds):
    both, one, two, out, _ = rounds
    w = weights_of(both)
    names = ["round1/a", "round1/b", "round2/a", "round2/c"]
    assert list(w["weights"]) == names and sum(w["weights"].values()) == pytest.approx(1, abs=1e-5)
    assert f"pooled {len(names)} models of 2 experiments: round1 (2), round2 (2)" in out
    assert w["experiments"] == [{"name": "round1", "path": "../results/round1", "oof_optimistic": False},
                                {"name": "round2", "path": "../results/round2", "oof_optimistic": True}]
    assert w["models"]["round2/a"] | {"oof_macro_f1": 0} == {"experiment": "round2", "model": "a",
                                                              "oof_optimistic": True, "oof_macro_f1": 0}
    table = pd.read_csv(both / "blend" / "models.csv")
    assert table.name.tolist() == names and table.experiment.tolist() == ["round1", "round1", "round2", "round2"]
    assert table.model.tolist() == ["a", "b", "a", "c"] and table.oof_optimistic.tolist() == [False, False, True, True]
    assert table.weight.tolist() == pytest.approx([w["weights"][n] for n in names], abs=1e-6)
    # Each model's OOF macro F1 alone is its own experiment's logits' score, inside its interval.
    for row in table.itertuples():
        exp = one if row.experiment == "round1" else two
        oof = load_blend_inputs(exp, load_experiment(exp)).oof
        pred = oof.logits[oof.models.index(row.model)].argmax(-1)
        assert row.oof_macro_f1 == pytest.approx(f1_score(oof.target, pred, average="macro"))
        assert row.oof_macro_f1_low <= row.oof_macro_f1 <= row.oof_macro_f1_high
        assert re.search(rf"^\s*{row.experiment}\s+{row.model}\s+{row.oof_macro_f1:.4f} \[", out, re.M)


def test_the_submission_is_the_blend_of_the_pooled_arrays(rounds):
    both, one, two, _, _ = rounds
    each = [load_blend_inputs(e, load_experiment(e)) for e in (one, two)]
    names = tuple(f"{e.name}/{m}" for e, i in zip((one, two), each) for m in i.oof.models)
    x, t = each[0].oof, each[0].test
    oof = OofLogits(names, np.concatenate([i.oof.logits for i in each]), x.image_key, x.person, x.fold, x.target,
                    x.rows_hash, ())
    test = EvalLogits(names, np.concatenate([i.test.logits for i in each]), t.image_ids, t.rows_hash, ())
    chosen = fit_blend(BlendInputs(oof, test, ()), BlendSpec(**FAST)).chosen
    w = weights_of(both)
    assert chosen.fitted.recipe.name == w["method"]
    assert dict(zip(names, chosen.fitted.weights.round(6).tolist())) == w["weights"]
    submission = pd.read_csv(both / "blend" / "submission.csv")
    assert submission.ans.tolist() == chosen.test_labels.tolist()
    assert w["truth"]["macro_f1"] == pytest.approx(f1_score(make_targets(60, seed=2), submission.ans, average="macro"))


def test_weight_on_an_optimistic_round_is_warned_and_marked(rounds):
    both, _, _, out, err = rounds
    w = weights_of(both)
    weighted = [n for n, v in w["weights"].items() if n.startswith("round2/") and v > 0]
    assert weighted  # round 2 sees better: the blend leans on it
    assert w["oof_optimistic_weighted"] == weighted
    warning = re.search(r"^WARNING: the chosen blend (\S+) gives weight to (\d+) OOF-optimistic model\(s\) "
                        r"\((.*?)\) of round2: .*pseudo\.per_fold: false.*nested estimate ([0-9.]+) are optimistic",
                        err, re.M)
    assert warning and warning.group(1) == w["method"] and int(warning.group(2)) == len(weighted)
    assert [p.split()[0] for p in warning.group(3).split(", ")] == weighted
    assert float(warning.group(4)) == pytest.approx(w["nested"]["macro_f1"], abs=5e-5)
    assert f"WARNING: {w['warning']}\n" in err and "WARNING" not in out
    assert re.search(r"^\s*round2\s+c\s+\S+ \[.*\]\s+[0-9.]+\s+yes$", out, re.M)  # the printed table's flag
    page = (both / "report.html").read_text()
    weights_part = re.search(r'<section id="weights">(.*?)</section>', page, re.S).group(1)
    for name in w["weights"]:
        row = re.search(rf'<td class="text">{re.escape(name)}(.*?)</td><td>(round[12])</td>', weights_part)
        assert row and ("OOF optimistic" in row.group(1)) == name.startswith("round2/")
        assert row.group(2) == name.split("/")[0]  # each model's experiment, in its own column
    folds_part = re.search(r'<section id="folds">(.*?)</section>', page, re.S).group(1)
    assert re.search(r'round2/c<span class="badge optimistic"[^>]*>OOF optimistic</span></td><td>0\.2000</td>',
                     folds_part)  # round 2's own run leaderboard, under the pooled name, marked
    assert re.search(r"round1/b</td><td>0\.2000</td>", folds_part)
    summary = re.search(r'<section id="summary">(.*?)</section>', page, re.S).group(1)
    assert "the chosen blend weighs" in summary and ", ".join(weighted) in summary
    assert "4 models of 2 experiments" in summary


def test_no_warning_when_no_optimistic_model_gets_weight(tmp_path, no_report):
    people, answers = world()
    one = write_round(tmp_path, "round1", ROUND1, people, answers)
    blind = write_round(tmp_path, "blind", {"noise": {"strength": (0.0, 0.0, 0.0), "noise": 3.0}}, people, answers,
                        seed=2, pseudo={"source": str(tmp_path / "round0"), **OPTIMISTIC})
    code, out, err = run_cli(blend.main, "--results", one, "--results", blind)
    assert code == 0, err
    assert no_report == [one] and not (blind / "blend").exists()  # no --out: the first experiment's folder
    w = weights_of(one)
    assert w["weights"]["blind/noise"] == 0 and w["oof_optimistic_weighted"] == [] and w["warning"] is None
    assert "WARNING" not in err + out
    table = pd.read_csv(one / "blend" / "models.csv").set_index("name")
    assert table.oof_optimistic["blind/noise"] and not table.oof_optimistic["round1/a"]


def test_one_experiment_is_blended_as_before(tmp_path, no_report):
    people, answers = world()
    one = write_round(tmp_path, "round1", ROUND1, people, answers)
    code, out, err = run_cli(blend.main, "--results", one)
    assert code == 0, err
    w = weights_of(one)
    assert list(w["weights"]) == list(ROUND1) and w["experiment"] == "round1"  # names as in the experiment
    assert w["experiments"] == [{"name": "round1", "path": ".", "oof_optimistic": False}]
    assert f"experiment: {one}\n" in out and "pooled" not in out and "WARNING" not in err
    expected = fit_blend(load_blend_inputs(one, load_experiment(one)), BlendSpec(**FAST)).chosen
    assert pd.read_csv(one / "blend" / "submission.csv").ans.tolist() == expected.test_labels.tolist()
    assert pd.read_csv(one / "blend" / "models.csv").name.tolist() == list(ROUND1)


def _other_folds(tmp, people, answers, one):
    return write_round(tmp, "round2", ROUND2, people.assign(fold=(people.fold + 1) % N_SPLITS), answers)


def _other_targets(tmp, people, answers, one):
    person = people.person.iloc[0]
    relabelled = people.assign(target=np.where(people.person == person, (people.target + 3) % 18, people.target))
    return write_round(tmp, "round2", ROUND2, relabelled, answers)


def _other_n_splits(tmp, people, answers, one):
    return write_round(tmp, "round2", ROUND2, make_people(60, 4, seed=1), answers, n_splits=4)


def _other_eval_set(tmp, people, answers, one):
    return write_round(tmp / "elsewhere", "round2", ROUND2, people, answers[:50])


def _other_rows(tmp, people, answers, one):
    return write_round(tmp, "round2", ROUND2, people[people.person != people.person.iloc[-1]], answers)


def _missing(tmp, people, answers, one):
    return tmp / "results" / "round2"


def _same_name(tmp, people, answers, one):
    return write_round(tmp / "elsewhere", "round1", ROUND2, people, answers)


@pytest.mark.parametrize("make, message", [
    (_other_folds, r"do not have the same folds: 420 OOF images are held out in another fold or as another person "
                   r"\(see each folds\.parquet\), e\.g\. \S+: fold \d \(person \S+\) in round1, fold \d .* in round2"),
    (_other_targets, r"do not have the same targets: 7 OOF images have another given label, e\.g\. \S+: class \d+ in "
                     r"round1, class \d+ in round2 \(data\.relabel none in round1, none in round2\)"),
    (_other_n_splits, r"do not have the same folds: folds\.n_splits is 3 in \S+round1/spec\.yaml and 4 in "
                      r"\S+round2/spec\.yaml"),
    (_other_eval_set, r"do not have the same eval set: 60 and 50 ImageIDs, first difference at row 51: \S+ in "
                      r"round1, none in round2 \(eval/info\.csv under data\.root \S+ and \S+elsewhere/data\)"),
    (_other_rows, r"do not have the same OOF rows: 7 images only in round1, 0 only in round2"),
    (_missing, r"round2: not an experiment's results folder \(no spec\.yaml in it\)"),
    (_same_name, r"two experiments with the same folder name"),
], ids=["folds", "targets", "n_splits", "eval_set", "rows", "missing_folder", "same_name"])
def test_experiments_that_do_not_match_are_one_clear_error_and_write_nothing(tmp_path, make, message):
    people, answers = world()
    one = write_round(tmp_path, "round1", ROUND1, people, answers)
    two = make(tmp_path, people, answers, one)
    out_dir = tmp_path / "pooled"
    for args in (("--results", one, "--results", two), ("--results", one, "--results", two, "--out", out_dir)):
        code, out, err = run_cli(blend.main, *args)
        assert code == 2 and err.startswith("error: ") and "Traceback" not in err
        assert re.search(message, err), err
        if make not in (_missing, _same_name):  # a pair of experiments: both folders named, and what to do
            assert f"{one} and {two}" in err and "; blend experiments " in err
        assert "blending" not in out.replace("blending 2 experiments", "")  # nothing fitted
    assert not (one / "blend").exists() and not (one / "report.html").exists() and not out_dir.exists()
    assert not [p for p in one.iterdir() if p.name.startswith(".")]


def test_out_holds_the_pooled_blend_and_its_report(rounds, tmp_path):
    both, one, two, _, _ = rounds
    assert {p.name for p in (both / "blend").iterdir()} == {"weights.json", "leaderboard.csv", "models.csv",
                                                             "submission.csv", "oof_predictions.parquet"}
    assert not (one / "blend").exists() and not (two / "blend").exists()  # the experiments' own: untouched
    w = weights_of(both)
    assert [(both / e["path"]).resolve() for e in w["experiments"]] == [one.resolve(), two.resolve()]
    (both / "report.html").unlink()
    code, out, err = run_cli(report.main, "--results", both)  # again, from the experiments weights.json names
    assert code == 0, err
    page = (both / "report.html").read_text()
    assert re.search(r'<td class="text">round2/c<span class="badge optimistic"', page)
    summary = re.search(r'<section id="summary">(.*?)</section>', page, re.S).group(1)
    links = re.findall(r'<a href="([^"]*)">(round[12])</a>', summary)
    assert [((both / href).resolve(), name) for href, name in links] == [(one.resolve(), "round1"),
                                                                        (two.resolve(), "round2")]
    # --out must not replace the outputs of an experiment that is not blended here.
    other = write_round(tmp_path, "other", ROUND1, *world())
    code, _, err = run_cli(blend.main, "--results", one, "--results", two, "--out", other)
    assert code == 2 and "the results folder of another experiment" in err and not (other / "blend").exists()


@pytest.mark.parametrize("where", ["out", "under_out", "blend"])
def test_an_out_that_cannot_be_a_folder_is_refused_before_fitting(rounds, tmp_path, where):
    _, one, two, _, _ = rounds
    blocker = tmp_path / "rounds.txt"
    blocker.write_text("my notes")
    out = {"out": blocker, "under_out": blocker / "sub", "blend": tmp_path / "pooled"}[where]
    if where == "blend":
        out.mkdir()
        (out / "blend").write_text("")
    code, stdout, err = run_cli(blend.main, "--results", two, "--results", one, "--out", out)
    assert code == 2 and err.count("error: ") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: {out / 'blend'}: the blend's output folder ")
    assert ("is a file, not a folder" if where == "blend" else f"cannot be made: {blocker} is a file") in err
    assert "blending" not in stdout.replace("blending 2 experiments", "")  # refused before anything was fitted
    assert blocker.read_text() == "my notes"


@pytest.mark.parametrize("out", [None, "round1"])
def test_the_pseudo_source_of_a_blended_round_keeps_its_own_blend(rounds, out):
    """round2 learned its labels from round1's blend/: a pooled blend must not replace it."""
    _, one, two, _, _ = rounds
    code, _, err = run_cli(blend.main, "--results", one, "--results", two, *(["--out", one] if out else []))
    assert code == 2 and err.startswith(f"error: {one} is the pseudo.source of {two}: its blend/ made that round's")
    assert "--out DIR" in err and not (one / "blend").exists()


def test_the_run_leaderboard_marks_an_optimistic_experiment(rounds):
    _, one, two, _, _ = rounds
    for exp, optimistic in ((one, False), (two, True)):
        board = pd.read_csv(exp / "leaderboard.csv", dtype={"fold": str})
        assert saved_oof_optimistic(exp) == optimistic
        assert board.oof_optimistic.tolist() == [optimistic] * len(board) and len(board) == 2 * (N_SPLITS + 2)
    assert not saved_oof_optimistic(two / "no_such_folder")


def test_each_round_alone_is_scored_by_the_pools_own_nested_estimate(tmp_path, no_report):
    """Beside the pool's chosen blend: each round's own chosen method (from its blend/weights.json, else
    chosen afresh) refitted on its models alone in the same nested folds, people and resamples."""
    people, answers = world()
    one = write_round(tmp_path, "round1", ROUND1, people, answers)
    two = write_round(tmp_path, "round2", ROUND2, people, answers, seed=1)
    truth = tmp_path / "data" / "truth" / "eval_answers.csv"
    assert run_cli(blend.main, "--results", one, "--truth", truth)[0] == 0  # round 1's own blend
    own = weights_of(one)
    code, out, err = run_cli(blend.main, "--results", one, "--results", two, "--truth", truth, "--out",
                             tmp_path / "both")
    assert code == 0, err
    w = weights_of(tmp_path / "both")
    alone = {r["experiment"]: r for r in w["rounds_alone"]}
    assert list(alone) == ["round1", "round2"]
    # Round 1 keeps its own choice, and the same procedure on the same rows gives its own nested estimate.
    assert (alone["round1"]["method"], alone["round1"]["method_from"]) == (own["method"], "its blend/weights.json")
    assert alone["round1"]["nested_macro_f1"] == pytest.approx(own["nested"]["macro_f1"], abs=1e-5)
    assert alone["round1"]["nested_macro_f1_interval"] == own["nested"]["macro_f1_interval"]
    assert alone["round1"]["truth_macro_f1"] == pytest.approx(own["truth"]["macro_f1"], abs=1e-5)
    # Round 2 has no blend of its own: chosen afresh, as `blend --results round2` would.
    expected = fit_blend(load_blend_inputs(two, load_experiment(two)), BlendSpec(**FAST)).chosen
    assert (alone["round2"]["method"], alone["round2"]["method_from"]) == (expected.fitted.recipe.name,
                                                                           "chosen afresh")
    assert alone["round2"]["nested_macro_f1"] == pytest.approx(expected.nested.scores.macro_f1, abs=1e-5)
    assert alone["round2"]["truth_macro_f1"] == pytest.approx(
        f1_score(answers, expected.test_labels, average="macro"), abs=1e-5)
    # The pool minus each round: paired by person, its point the difference of the two nested scores.
    for r in alone.values():
        diff = r["pool_minus_round"]
        assert diff["difference"] == pytest.approx(w["nested"]["macro_f1"] - r["nested_macro_f1"], abs=1e-5)
        low, high = diff["interval"]
        assert low <= diff["difference"] <= high and diff["clearly_worse"] == (high < 0)
    # The console shows the pool's row and each round's, with its true score.
    assert "each round's own chosen blend, fitted on its models alone in the same nested folds" in out
    assert re.search(rf"^  pool +{re.escape(w['method'])} +{w['nested']['macro_f1']:.4f} \[.*\] +"
                     rf"{w['truth']['macro_f1']:.4f}$", out, re.M)
    for name, r in alone.items():
        diff = re.escape(format(r["pool_minus_round"]["difference"], "+.3f"))
        assert re.search(rf"^  {name} +{re.escape(r['method'])} +{r['nested_macro_f1']:.4f} \[.*\] +"
                         rf"{diff} \[.*\] +{r['truth_macro_f1']:.4f}$", out, re.M)
    # One experiment: nothing to compare.
    assert weights_of(one)["rounds_alone"] == [] and "each round's own" not in run_cli(
        blend.main, "--results", one)[1]


def test_the_pooled_report_shows_each_round_alone_and_advises_an_audit_that_works(rounds):
    both, one, two, _, _ = rounds
    w = weights_of(both)
    page = (both / "report.html").read_text()
    summary = re.search(r'<section id="summary">(.*?)</section>', page, re.S).group(1)
    cell = re.search(r"<th>each round alone</th><td>(.*?)</td>", summary, re.S).group(1)
    lines = cell.split("<br>")
    assert lines[0].startswith(f"<b>pool</b>: <code>{w['method']}</code>, nested <b>{w['nested']['macro_f1']:.4f}</b>")
    for line, r in zip(lines[1:], w["rounds_alone"], strict=True):
        assert line.startswith(f"<b>{r['experiment']}</b> alone: <code>{r['method']}</code> (chosen afresh), "
                               f"nested <b>{r['nested_macro_f1']:.4f}</b>")
        assert f"pool minus it {r['pool_minus_round']['difference']:+.4f}" in line
        assert f"true <b>{r['truth_macro_f1']:.4f}</b>" in line
    audit = re.search(r'<section id="audit">(.*?)</section>', page, re.S).group(1)
    assert "run <code>python -m orchestrator.audit</code>, then this report again" not in audit
    commands = re.findall(r"<code>python -m orchestrator.audit --results ([^<]+)</code>", audit)
    assert commands == [str(one), str(two)]
    # The advised command works (the plain one, in this folder, would not: it holds no experiment).
    from orchestrator import audit as audit_cli
    try:
        code, _, err = run_cli(audit_cli.main, "--results", commands[0])
        assert code == 0, err
        assert (one / "audit.csv").is_file()
        assert run_cli(audit_cli.main, "--results", both)[0] == 2
    finally:
        for name in ("audit.csv", "audit_relabel.csv"):
            (one / name).unlink(missing_ok=True)
