"""The mislabel audit recovers injected mislabels and writes a relabel file that fixes them."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from orchestrator import audit
from orchestrator.analysis import audit as auditing
from orchestrator.analysis.ensemble import softmax
from orchestrator.analysis.results import load_oof
from tasks.labels import mask_of_stem
from tasks.relabel import apply_relabel
from tests.fake_logits import fake_models, inject_mislabels, make_people, make_targets, write_experiment

N_SPLITS = 4
MODELS = {"a": {}, "b": {"strength": (3.0, 2.8, 1.6)}, "c": {"strength": (2.5, 2.0, 1.8)}}
N_GENDER, N_SWAP, N_AGE = 6, 5, 6


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    people = make_people(300, N_SPLITS, seed=4)
    bad = inject_mislabels(people, N_GENDER, N_SWAP, N_AGE, seed=5)
    answers = make_targets(100)
    models = fake_models(bad.true, answers, N_SPLITS, MODELS)
    exp = write_experiment(tmp, bad.given, models, answers, N_SPLITS)
    truth = tmp / "mislabeled.csv"
    bad.truth.to_csv(truth, index=False)
    return exp, truth, bad


def _images(people: pd.DataFrame) -> pd.DataFrame:
    """The training index as tasks.dataset builds it, for tasks.relabel to apply a file to."""
    stem = people.image_key.str.rpartition("/")[2]
    return pd.DataFrame({"image_key": people.image_key, "person": people.person,
                         "id": people.person.str.partition("_")[0], "stem": stem,
                         "mask": [mask_of_stem(s) for s in stem], "gender": people.gender, "age": people.age})


def test_audit_file_fixes_the_injected_mislabels_when_fed_back(audited, capsys):
    exp, truth, bad = audited
    assert audit.main(["--results", str(exp), "--top", str(N_AGE), "--truth-mislabels", str(truth)]) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(exp / "audit.csv", dtype=str)
    assert list(table.columns[:3]) == ["person", "field", "value"]
    fixed, _ = apply_relabel(_images(bad.given), exp / "audit.csv")
    right = (fixed.label.to_numpy() == bad.true.target.to_numpy())
    by_person = pd.Series(right).groupby(bad.given.person.to_numpy()).all()
    wrong_before = set(bad.truth.person)
    # Every gender flip and swapped pair is repaired; most age bands too; nobody else is broken.
    for field, n in (("gender", N_GENDER), ("incorrect_mask", N_SWAP)):
        people = set(bad.truth.person[bad.truth.field == field])
        assert len(people) == n and by_person[list(people)].all()
    aged = list(bad.truth.person[bad.truth.field == "age"])
    assert by_person[aged].sum() >= N_AGE - 2
    assert by_person.drop(list(wrong_before)).mean() >= 0.98
    assert re.search(r"gender\s+geo\s+6\s+6\s+6\s+1\.000\s+1\.000", out), out


def test_swap_suggestion_is_the_two_row_relabel_pair(audited):
    exp, _, bad = audited
    table = pd.read_csv(exp / "audit.csv", dtype=str)
    swaps = table[table.attribute == "mask"]
    assert len(swaps) % 2 == 0
    for person, rows in swaps.groupby("person"):
        assert dict(zip(rows.field, rows.value)) == {"incorrect_mask": "not_worn", "normal": "incorrect"}
    ages = table[table.attribute == "age"]
    assert ages.value.str.fullmatch(r"\d+").all()


def _gender_evidence(rng, n_people: int, n_wrong: int) -> tuple[auditing.Hypotheses, set[str]]:
    """A calibrated model's per-image probability of the given gender: a person effect plus
    image noise in logit space (so single confidently wrong photos happen), flipped for the
    people whose gender is wrong. People are in random order so ties favour no one."""
    z = rng.normal(2.0, 1.0, (n_people, 1)) + rng.normal(0.0, 1.5, (n_people, 7))
    p = 1 / (1 + np.exp(-z))
    wrong = rng.choice(n_people, n_wrong, replace=False)
    p[wrong] = 1 - p[wrong]
    people = np.array([f"p{i:05d}" for i in range(n_people)])
    h = auditing.Hypotheses("gender", people, np.repeat(np.arange(n_people), 7),
                         np.stack([p.ravel(), 1 - p.ravel()], 1), np.zeros(n_people, np.int64))
    return h, set(people[wrong])


def test_geometric_mean_ranks_whole_person_errors_above_min_and_vote():
    found = dict.fromkeys(auditing.AGGREGATES, 0)
    for seed in range(3):
        h, wrong = _gender_evidence(np.random.default_rng(seed), 3000, 90)
        for how in auditing.AGGREGATES:
            found[how] += len(set(auditing.rank(h, how).people[:90]) & wrong)
    precision = {how: n / 270 for how, n in found.items()}
    assert precision["geo"] > 0.75
    assert precision["geo"] > precision["vote"] + 0.02
    assert precision["geo"] > precision["min"] + 0.08


def test_audit_probabilities_follow_a_soft_blend_and_ignore_a_hard_one(audited, tmp_path):
    exp, _, _ = audited
    oof = load_oof(exp / "oof.parquet", N_SPLITS, list(MODELS))
    record = {"method": "soft_greedy", "vote": "soft", "weights": {"a": 0.0, "b": 1.0, "c": 0.0},
              "temperatures": {"a": 1.0, "b": 2.0, "c": 1.0}}
    path = tmp_path / "weights.json"
    path.write_text(json.dumps(record))
    assert np.allclose(auditing.image_probs(oof, path), softmax(oof.logits[1] / 2.0), atol=1e-6)
    path.write_text(json.dumps({**record, "vote": "hard"}))
    assert np.allclose(auditing.image_probs(oof, path), softmax(oof.logits).mean(0), atol=1e-6)


def test_a_truth_file_about_other_people_is_a_clear_error(audited, tmp_path, capsys):
    exp, _, _ = audited
    other = tmp_path / "other.csv"
    pd.DataFrame({"person": ["004432"], "field": ["gender"], "value": ["female"]}).to_csv(other, index=False)
    assert audit.main(["--results", str(exp), "--truth-mislabels", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none of its people are in the OOF rows" in err


def test_a_truth_age_in_other_script_digits_is_a_clear_error(audited, tmp_path, capsys):
    exp, _, bad = audited
    person = bad.given.person.iloc[0]
    other = tmp_path / "arabic.csv"
    other.write_text(f"person,field,value\n{person},age,\u0666\u0661\n", encoding="utf-8")  # '٦١': 61
    assert audit.main(["--results", str(exp), "--truth-mislabels", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "arabic.csv:2: '\u0666\u0661' is not a valid age" in err, err
