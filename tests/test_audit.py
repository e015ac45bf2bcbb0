"""The mislabel audit finds injected mislabels, says how sure it is, and writes a relabel file
of its suspects that fixes them."""
from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pandas as pd
import pytest

from orchestrator import audit
from orchestrator.analysis.ensembles.methods import softmax
from orchestrator.analysis.mislabels import contradictions as auditing
from orchestrator.analysis.mislabels.suspects import Hypotheses, assess, review_size, review_tier
from orchestrator.analysis.results import OofLogits, load_oof
from tasks.data.relabel import apply_relabel
from tasks.labels import NUM_CLASSES, mask_of_stem
from tests.helpers.fake_logits import (
    FakeModels,
    fake_models,
    inject_mislabels,
    make_people,
    make_targets,
    model_logits,
    write_experiment,
)

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
    """The training index as tasks.data.dataset builds it, for tasks.data.relabel to apply a file to."""
    stem = people.image_key.str.rpartition("/")[2]
    return pd.DataFrame({"image_key": people.image_key, "person": people.person,
                         "id": people.person.str.partition("_")[0], "stem": stem,
                         "mask": [mask_of_stem(s) for s in stem], "gender": people.gender, "age": people.age})


@pytest.fixture(scope="module")
def audit_run(audited):
    """The audit CLI run once on the fixture, its console output kept."""
    exp, truth, _ = audited
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert audit.main(["--results", str(exp), "--truth-mislabels", str(truth)]) == 0
    return out.getvalue()


def test_relabel_file_of_the_suspects_fixes_the_injected_mislabels_when_fed_back(audited, audit_run):
    exp, truth, bad = audited
    table = pd.read_csv(exp / "audit_relabel.csv", dtype=str)
    assert list(table.columns[:3]) == ["person", "field", "value"]
    fixed, _ = apply_relabel(_images(bad.given), exp / "audit_relabel.csv")
    right = (fixed.label.to_numpy() == bad.true.target.to_numpy())
    by_person = pd.Series(right).groupby(bad.given.person.to_numpy()).all()
    wrong_before = set(bad.truth.person)
    # Every gender flip and swapped pair is repaired; most age bands too; nobody else is touched.
    for field, n in (("gender", N_GENDER), ("incorrect_mask", N_SWAP)):
        people = set(bad.truth.person[bad.truth.field == field])
        assert len(people) == n and by_person[list(people)].all()
    aged = list(bad.truth.person[bad.truth.field == "age"])
    assert by_person[aged].sum() >= N_AGE - 2
    assert by_person.drop(list(wrong_before)).all()
    assert re.search(r"gender\s+geo\s+6\s+6\s+6\s+1\.000\s+1\.000", audit_run), audit_run  # the old top-k table
    assert re.search(r"suspects at p_wrong > 0\.5 \(review: worth a look\):\n.*\n\s+gender\s+6\s+6\s+6\s+1\.000\s+1\.000\s+0\s",
                     audit_run), audit_run


def test_audit_csv_ranks_everyone_and_the_relabel_file_holds_only_suspects(audited, audit_run):
    exp, _, bad = audited
    table = pd.read_csv(exp / "audit.csv")
    assert list(table.columns) == ["person", "attribute", "rank", "score", "p_wrong", "given", "suggested",
                                   "suspect", "tier"]
    everyone = set(bad.given.person)
    for attribute, rows in table.groupby("attribute"):
        assert set(rows.person) == everyone and rows.person.is_unique
        assert rows["rank"].tolist() == list(range(1, len(everyone) + 1))
        assert rows.p_wrong.is_monotonic_decreasing and rows.p_wrong.between(0, 1).all()
        assert (rows.suspect == (rows.p_wrong > 0.5)).all() and (rows.suspect == (rows.tier == "suspect")).all()
        _assert_review_tier(rows, len(everyone))
        suspects = rows[rows.suspect]
        expected = (1 - suspects.p_wrong).sum()
        line = re.search(rf"^{attribute}: (\d+) suspects? of (\d+) people \(expected false alarms about ([0-9.]+)\)",
                         audit_run, re.M)
        assert line and int(line.group(1)) == len(suspects) and int(line.group(2)) == len(everyone)
        assert float(line.group(3)) == pytest.approx(expected, abs=0.051)
    relabel = pd.read_csv(exp / "audit_relabel.csv", dtype=str)
    suspects = table[table.suspect]
    assert set(zip(relabel.person, relabel.attribute)) == set(zip(suspects.person, suspects.attribute))
    assert "audit_relabel.csv (17 suspects in relabel format: review it, then set data.relabel to it)" in audit_run


def test_swap_suggestion_is_the_two_row_relabel_pair(audited, audit_run):
    exp, _, bad = audited
    table = pd.read_csv(exp / "audit_relabel.csv", dtype=str)
    swaps = table[table.attribute == "mask"]
    assert len(swaps) == 2 * N_SWAP
    for _, rows in swaps.groupby("person"):
        assert dict(zip(rows.field, rows.value)) == {"incorrect_mask": "not_worn", "normal": "incorrect"}
    ages = table[table.attribute == "age"]
    assert ages.value.str.fullmatch(r"\d+").all()


def _assert_review_tier(rows: pd.DataFrame, people: int, error_rate: float = 0.01) -> None:
    """audit.csv's "worth a look" rows of one attribute: the first review_size non-suspects of the
    ranking whose p_wrong is above the prior, and no one else."""
    rows = rows.sort_values("rank")
    tier = rows.tier.fillna("")
    eligible = rows[(tier != "suspect") & (rows.p_wrong > error_rate)]
    expected = list(eligible["rank"][:review_size(people, error_rate)])
    assert list(rows["rank"][tier == "review"]) == expected
    assert set(tier) <= {"suspect", "review", ""}


# Models that see little, with a person's photos misjudged alike: as in the 150-person demo,
# nobody passes the cut, yet the planted errors sit near the top of the rankings.
WEAK, WEAK_PERSON_SD = (0.5, 0.3, 0.5), 1.0


def _weak_case(seed: int, people: int = 200):
    bad = inject_mislabels(make_people(people, N_SPLITS, seed=seed), 3, 3, 0, seed=seed + 100)
    return bad, _fake_logits(bad.true, [WEAK] * 3, WEAK_PERSON_SD, seed)


@pytest.fixture(scope="module")
def weak_run(tmp_path_factory):
    """The audit CLI on weak models: no suspects. Returns the experiment, truth and console output."""
    tmp = tmp_path_factory.mktemp("weak")
    bad, logits = _weak_case(0)
    answers = make_targets(40)
    models = fake_models(bad.true, answers, N_SPLITS, {m: {} for m in "abc"})
    exp = write_experiment(tmp, bad.given, FakeModels(dict(zip("abc", logits)), models.test), answers, N_SPLITS)
    truth = tmp / "mislabeled.csv"
    bad.truth.to_csv(truth, index=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert audit.main(["--results", str(exp), "--truth-mislabels", str(truth)]) == 0
    return exp, bad.truth, out.getvalue()


def test_without_suspects_the_console_shows_the_top_of_each_ranking_and_the_planted_ones(weak_run):
    exp, truth, out = weak_run
    table = pd.read_csv(exp / "audit.csv", dtype={"tier": str})
    assert not table.suspect.any() and len(pd.read_csv(exp / "audit_relabel.csv")) == 0
    assert "nan" not in out.lower(), out  # no NaN precision: "no suspects" instead
    found = 0
    for attribute, field in (("gender", "gender"), ("mask", "incorrect_mask")):
        rows = table[table.attribute == attribute]
        _assert_review_tier(rows, 200)
        review = rows[rows.tier == "review"]
        planted = set(truth.person[truth.field == field])
        hits = len(set(review.person) & planted)
        found += hits
        assert f"{attribute}: no suspects of 200 people: highest p_wrong {rows.p_wrong.max():.3f}, below the cut 0.5" \
            in out, out
        assert (f"  worth a look: {len(review)} people, p_wrong {review.p_wrong.min():.3f} to "
                f"{review.p_wrong.max():.3f}: about {review.p_wrong.sum():.1f} wrong labels expected") in out, out
        assert f"    planted: {hits} of 3 among the suspects and worth a look" in out, out
        for r in review.itertuples():
            mark = r"\s+yes" if r.person in planted else ""
            assert re.search(rf"^\s+{r.rank}\s+{re.escape(r.person)}\s+{r.p_wrong:.3f}\s+review\s+\S.*->.*\S{mark}$",
                             out, re.M), (r, out)
    assert found >= 3  # 5 of 200 people per attribute picked at random would hold 0.15 of the 6
    assert re.search(r"^\s+gender\s+0\s+3\s+0\s+no suspects\s+0\.000\s+0\s+0\.000\s+5\s", out, re.M), out


def test_the_worth_a_look_tier_holds_planted_errors_the_cut_misses():
    found = tiered = 0
    for seed in range(4):
        bad, logits = _weak_case(seed)
        g = bad.given
        oof = OofLogits(("a", "b", "c"), logits, g.image_key.to_numpy(), g.person.to_numpy(), g.fold.to_numpy(),
                        g.target.to_numpy(), "h", ())
        h = auditing.hypotheses(oof, softmax(logits).mean(0))
        for attribute, field in (("gender", "gender"), ("mask", "incorrect_mask")):
            a = assess(h[attribute])
            assert not a.suspect.any()
            found += len(set(a.people[a.review]) & set(bad.truth.person[bad.truth.field == field]))
            tiered += int(a.review.sum())
            assert a.expected_in_review == pytest.approx(a.p_wrong[a.review].sum())
    # The tier's 5 of 200 people hold a third or more of the 24 planted errors (chance: 2.5%).
    assert tiered == 40 and found >= 8


def test_review_size_and_tier():
    assert [review_size(n, 0.01) for n in (3, 150, 250, 1000, 2700)] == [3, 5, 5, 20, 54]
    assert review_size(1000, 0.05) == 100
    p_wrong = np.array([0.9, 0.6, 0.3, 0.2, 0.05, 0.011, 0.01, 0.001])
    suspect = p_wrong > 0.5
    assert list(review_tier(p_wrong, suspect, 3, 0.01)) == [False, False, True, True, True, False, False, False]
    assert list(np.flatnonzero(review_tier(p_wrong, suspect, 9, 0.01))) == [2, 3, 4, 5]  # not at the prior or below


def _fake_logits(people: pd.DataFrame, strengths, person_sd: float, seed: int) -> np.ndarray:
    """OOF logits of models that, besides image noise, misjudge some people on every photo
    (a shared person term), as real faces are misjudged: contradictions that are no errors."""
    codes = pd.factorize(people.person)[0]
    logits = []
    for i, strength in enumerate(strengths):
        rng = np.random.default_rng(10 * seed + i)
        shared = person_sd * rng.standard_normal((codes.max() + 1, NUM_CLASSES))[codes]
        logits.append(model_logits(people.target.to_numpy(), 1000 + 10 * seed + i, strength, shared=shared))
    return np.stack(logits)


@pytest.mark.parametrize("seed", [1, 2])
def test_suspects_are_mostly_real_errors_where_contradictions_were_mostly_false_alarms(seed):
    people = make_people(600, N_SPLITS, seed=seed)
    bad = inject_mislabels(people, 6, 4, 6, seed=seed + 100)
    logits = _fake_logits(bad.true, [(2.0, 1.2, 0.8), (2.0, 1.0, 1.0), (1.5, 1.1, 0.9)], 0.8, seed)
    g = bad.given
    oof = OofLogits(("a", "b", "c"), logits, g.image_key.to_numpy(), g.person.to_numpy(), g.fold.to_numpy(),
                    g.target.to_numpy(), "h", ())
    h = auditing.hypotheses(oof, softmax(logits).mean(0))
    truth = set(bad.truth.person[bad.truth.field == "age"])
    old = auditing.rank(h["age"], "geo")
    contradicted = set(old.people[old.suggested != old.given])
    assert len(contradicted & truth) / len(contradicted) < 0.4  # the old list: mostly false alarms
    found = assess(h["age"])
    suspects = set(found.people[found.suspect])
    assert len(suspects & truth) / len(suspects) >= 0.8 and len(suspects & truth) >= 5
    assert found.expected_false_alarms < 1.5


def _evidence(rng, n_people: int, n_wrong: int, hyps: int = 2, photos: int = 7) -> tuple[Hypotheses, set[str]]:
    """Per-image probabilities of a calibrated model (scores plus the log prior) for hypotheses
    with prior 0.6, 0.3(, 0.1); n_wrong people are given the next hypothesis instead."""
    weights = np.array([0.6, 0.3, 0.1][:hyps])
    prior = weights / weights.sum()
    true = rng.choice(hyps, n_people, p=prior)
    scores = 1.5 * np.eye(hyps)[true][:, None, :] + rng.normal(0, 1.0, (n_people, photos, hyps))
    probs = np.exp(scores + np.log(prior)) / np.exp(scores + np.log(prior)).sum(-1, keepdims=True)
    given = true.copy()
    wrong = rng.choice(n_people, n_wrong, replace=False)
    given[wrong] = (true[wrong] + 1) % hyps
    people = np.array([f"p{i:05d}" for i in range(n_people)])
    h = Hypotheses("age", people, np.repeat(np.arange(n_people), photos), probs.reshape(-1, hyps), given)
    return h, set(people[wrong])


def test_a_persons_identical_photos_count_as_one():
    h, _ = _evidence(np.random.default_rng(0), 800, 8, photos=1)
    copies = Hypotheses(h.attribute, h.people, np.repeat(h.codes, 7), np.repeat(h.probs, 7, axis=0), h.given)
    one, seven = assess(h), assess(copies)
    assert seven.calibration.effective_images == pytest.approx(1.0, abs=0.02)
    assert list(seven.people) == list(one.people)
    assert seven.p_wrong == pytest.approx(one.p_wrong, abs=0.02)


def test_uninformative_photos_leave_rare_labels_unsuspected():
    # Seven photos that only repeat the prior: dividing the prior out once per photo keeps the
    # rare band's people from looking wrong seven times over.
    rng = np.random.default_rng(1)
    h, _ = _evidence(rng, 900, 0, hyps=3)
    flat = np.tile(h.probs.mean(0), (len(h.probs), 1)) * np.exp(rng.normal(0, 0.01, h.probs.shape))
    found = assess(Hypotheses("age", h.people, h.codes, flat / flat.sum(1, keepdims=True), h.given))
    assert not found.suspect.any() and found.p_wrong.max() < 0.1


def test_overconfident_probabilities_are_tempered_before_they_multiply():
    h, wrong = _evidence(np.random.default_rng(2), 1500, 15)
    sharp = h.probs ** 3 / (h.probs ** 3).sum(1, keepdims=True)
    calm, loud = assess(h), assess(Hypotheses(h.attribute, h.people, h.codes, sharp, h.given))
    assert loud.calibration.temperature == pytest.approx(3 * calm.calibration.temperature, rel=0.02)
    assert set(loud.people[loud.suspect]) == set(calm.people[calm.suspect])
    assert len(set(calm.people[calm.suspect]) & wrong) >= 0.8 * calm.suspect.sum() > 0


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
    path.write_text(json.dumps({**record, "method": "hard_weighted", "vote": "hard"}))
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


@pytest.mark.parametrize("option, value, message", [
    ("--cut", "abc", "argument --cut: must be a number between 0 and 1 (exclusive), got 'abc'"),
    ("--error-rate", "1.5", "argument --error-rate: must be a number between 0 and 1 (exclusive), got '1.5'"),
    ("--top", "x", "argument --top: must be a whole number of at least 1, got 'x'"),
])
def test_a_bad_option_value_is_said_in_the_options_words(capsys, option, value, message):
    with pytest.raises(SystemExit) as info:
        audit.parse_args([option, value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and "_fraction" not in err and "int value" not in err, err
