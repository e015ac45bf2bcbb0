"""Pseudo labels for a second round: per fold they come only from models that never saw the
fold; thresholds, caps, soft labels and identity; bad sources are clear errors.

Round 1 here is a fake results folder (tests/helpers/fake_logits.py): known logits, no training.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from orchestrator.analysis.pseudo_labels.calibration import class_thresholds, select_ranked
from orchestrator.analysis.pseudo_labels.labelling import build_pseudo, load_round1
from orchestrator.cluster.plan import plan_jobs
from tasks.labels import NUM_CLASSES
from tasks.logits import LogitsMeta, logits_table, read_logits, write_logits
from tasks.pseudo.fold_sets import PseudoError, pseudo_path, read_pseudo
from tasks.spec.experiment import Experiment, SpecError
from tests.helpers.fake_logits import (
    eval_ids,
    fake_models,
    make_people,
    make_targets,
    spec_dict,
    write_experiment,
    write_folds,
)

K = 3
MODELS = {"good": {}, "age_eye": {"strength": (2.0, 1.5, 2.0)}, "weak": {"strength": (1.0, 1.0, 0.5)}}


@pytest.fixture
def round1(tmp_path):
    people = make_people(60, K, seed=1)
    answers = make_targets(200, seed=2)
    exp = write_experiment(tmp_path, people, fake_models(people, answers, K, MODELS), answers, K, name="r1")
    write_folds(exp, people)
    return tmp_path, exp, people, answers


def round2(tmp_path, source, **pseudo) -> Experiment:
    raw = spec_dict(tmp_path, ["m"], K, name="r2")
    return Experiment.model_validate({**raw, "pseudo": {"source": str(source), **pseudo}})


def build(spec: Experiment, people: pd.DataFrame, n_eval: int, write: bool = False):
    lines: list[str] = []
    out = build_pseudo(spec, people[["image_key", "person", "fold"]], eval_ids(n_eval), write, log=lines.append)
    return out, "\n".join(lines)


def rewrite_logits(exp, split: str, fold: int, change) -> None:
    """Replace round 1's fold-`fold` logits in its oof or test file by change(logits)."""
    path = exp / f"{split}.parquet"
    frame, logits, meta = read_logits(path)
    logits = logits.copy()
    at = frame.fold.to_numpy() == fold
    logits[at] = change(logits[at])
    write_logits(path, logits_table(frame, logits, meta))


def write_blend_choice(exp, method: str) -> None:
    """A round-1 blend/weights.json as orchestrator.blend writes it (what pseudo labelling reads)."""
    _, _, meta = read_logits(exp / "oof.parquet")
    (exp / "blend").mkdir(exist_ok=True)
    record = {"weights": {m: 1 / len(MODELS) for m in MODELS}, "rows_hash": meta.rows_hash, "metric": "macro_f1",
              "method": method}
    (exp / "blend" / "weights.json").write_text(json.dumps(record))


def shuffled(logits: np.ndarray) -> np.ndarray:
    """Logits of a different model: the same rows' logits, classes permuted."""
    return np.ascontiguousarray(logits[:, np.random.default_rng(0).permutation(NUM_CLASSES)])


def test_per_fold_labels_come_only_from_models_that_never_saw_the_fold(round1):
    tmp, exp, people, answers = round1
    write_blend_choice(exp, "soft_greedy_refined_temp+offsets")  # refitted per fold: weights and temperatures
    spec = round2(tmp, exp, threshold=0.3)
    before, text = build(spec, people, len(answers))
    assert "fold k's labels come only from round 1's fold-k models" in text and "soft_greedy_refined_temp+offsets" in text
    # Round 1's fold-1 models replaced by others (say, ones that saw fold 0's people): fold 0's
    # labels must not move, fold 1's must.
    rewrite_logits(exp, "test", 1, shuffled)
    after, _ = build(spec, people, len(answers))
    assert after.hashes[0] == before.hashes[0] and after.hashes[2] == before.hashes[2]
    assert after.hashes[1] != before.hashes[1]
    # Fold 0's OOF rows (its people's labels, through the weights) must not reach fold 0's labels.
    rewrite_logits(exp, "oof", 0, shuffled)
    again, _ = build(spec, people, len(answers))
    assert again.hashes[0] == after.hashes[0]
    assert again.hashes[1] != after.hashes[1] or again.hashes[2] != after.hashes[2]  # the others refit on it


def test_full_blend_labels_are_one_set_that_every_fold_model_shapes(round1):
    tmp, exp, people, answers = round1
    spec = round2(tmp, exp, threshold=0.3, per_fold=False)
    before, text = build(spec, people, len(answers))
    assert "OOF scores will be optimistic" in text and before.summary["oof_optimistic"]
    assert len(set(before.hashes.values())) == 1
    rewrite_logits(exp, "test", 1, shuffled)
    after, _ = build(spec, people, len(answers))
    assert after.hashes[0] != before.hashes[0]  # the leak: a model that saw fold 0 labels fold 0's photos


def test_threshold_and_cap_select_the_most_confident(round1):
    tmp, exp, people, answers = round1
    loose, _ = build(round2(tmp, exp, threshold=0.0, max_share=0.9), people, len(answers))
    assert all(len(s) == len(answers) for s in loose.sets.values())  # nothing is below 0
    strict, _ = build(round2(tmp, exp, threshold=0.35, max_share=0.9), people, len(answers))
    for k, rows in strict.sets.items():
        full = loose.sets[k]
        assert (rows.confidence >= 0.35).all()
        assert 0 < len(rows) == (full.confidence >= 0.35).sum() < len(answers)
        assert np.allclose(rows.prob.sum(1), 1, atol=1e-4) and (rows.prob.argmax(1) == rows.label).all()
    training = (people.fold != 0).sum()
    capped, text = build(round2(tmp, exp, threshold=0.0, max_share=0.2), people, len(answers))
    cap = int(0.2 / 0.8 * training)
    rows = capped.sets[0]
    assert len(rows) == cap < len(answers) and "capped at" in text
    # the kept rows are the most confident of the eligible ones
    assert rows.confidence.min() >= np.sort(loose.sets[0].confidence)[-cap]


def test_identity_follows_the_rows_a_fold_trains_on(round1, tmp_path):
    """A changed threshold reruns only the folds whose rows it changes; soft and weight rerun all."""
    tmp, exp, people, answers = round1
    base, _ = build(round2(tmp, exp, threshold=0.0), people, len(answers))
    # a threshold just above the least sure photo of one fold, below every other fold's least sure
    lowest = {k: float(s.confidence.min()) for k, s in base.sets.items()}
    fold = min(lowest, key=lowest.get)
    others = [k for k in range(K) if k != fold]
    assert lowest[fold] + 1e-6 < min(lowest[k] for k in others)
    nudged, _ = build(round2(tmp, exp, threshold=lowest[fold] + 1e-6), people, len(answers))
    assert nudged.hashes[fold] != base.hashes[fold] and all(nudged.hashes[k] == base.hashes[k] for k in others)
    spec = round2(tmp, exp, threshold=0.0)
    ids = {p.fold: p.job_id for p in plan_jobs(spec, "rows", base.hashes)}
    moved = {p.fold: p.job_id for p in plan_jobs(spec, "rows", nudged.hashes)}
    assert moved[fold] != ids[fold] and all(moved[k] == ids[k] for k in others)
    soft, _ = build(round2(tmp, exp, threshold=0.0, soft=True), people, len(answers))
    heavy, _ = build(round2(tmp, exp, threshold=0.0, weight=0.5), people, len(answers))
    assert all(soft.hashes[k] != base.hashes[k] != heavy.hashes[k] for k in range(K))
    # without pseudo labels, job ids are what they always were
    plain = Experiment.model_validate(spec_dict(tmp, ["m"], K, name="r2"))
    assert {p.job_id for p in plan_jobs(plain, "rows")}.isdisjoint(ids.values())


def test_files_hold_what_each_fold_trains_on(round1):
    tmp, exp, people, answers = round1
    spec = round2(tmp, exp, threshold=0.4)
    out, text = build(spec, people, len(answers), write=True)
    for k in range(K):
        path = pseudo_path(spec.out_dir, k)
        assert str(path) in text
        saved = read_pseudo(path)
        assert list(saved.image_id) == list(out.sets[k].image_id) and (saved.label == out.sets[k].label).all()
        assert read_pseudo(path.read_bytes()).prob.shape == (len(saved), NUM_CLASSES)
    summary = json.loads((spec.out_dir / "pseudo" / "summary.json").read_text())
    assert summary["method"] == "soft_equal" and not summary["from_blend"]
    assert [summary["folds"][str(k)]["rows"] for k in range(K)] == [len(out.sets[k]) for k in range(K)]


def test_bad_sources_are_clear_errors(round1):
    tmp, exp, people, answers = round1
    with pytest.raises(PseudoError, match="no spec.yaml"):
        build(round2(tmp, tmp / "results" / "nope"), people, len(answers))
    with pytest.raises(PseudoError, match="own results folder"):
        build(round2(tmp, tmp / "results" / "r2"), people, len(answers))
    moved = people.assign(fold=(people.fold + 1) % K)
    with pytest.raises(PseudoError, match="folds differ"):
        build(round2(tmp, exp), moved, len(answers))
    with pytest.raises(PseudoError, match="eval set"):
        build(round2(tmp, exp), people, len(answers) - 5)
    optimistic = exp.parent / "r1_full"
    optimistic.mkdir()
    for name in ("oof.parquet", "test.parquet", "folds.parquet"):
        (optimistic / name).write_bytes((exp / name).read_bytes())
    raw = {**spec_dict(tmp, list(MODELS), K, name="r1_full"), "pseudo": {"source": str(exp), "per_fold": False}}
    (optimistic / "spec.yaml").write_text(json.dumps(raw))  # YAML reads JSON
    with pytest.raises(PseudoError, match="would not be honest"):
        build(round2(tmp, optimistic), people, len(answers))
    build(round2(tmp, optimistic, per_fold=False), people, len(answers))  # marked optimistic anyway: allowed
    write_blend_choice(exp, "soft_greedy")
    record = json.loads((exp / "blend" / "weights.json").read_text())
    record["weights"] = {"good": 1.0}
    (exp / "blend" / "weights.json").write_text(json.dumps(record))
    with pytest.raises(PseudoError, match="blend round 1 again"):
        build(round2(tmp, exp), people, len(answers))


def test_round1_reads_each_fold_models_own_test_logits(round1):
    tmp, exp, people, answers = round1
    r1 = load_round1(round2(tmp, exp), people[["image_key", "person", "fold"]], eval_ids(len(answers)))
    frame, logits, _ = read_logits(exp / "test.parquet")
    row = frame[(frame.model == "age_eye") & (frame.fold == 2)].index[7]
    m = r1.inputs.test.models.index("age_eye")
    t = list(eval_ids(len(answers))).index(frame.image_key[row])
    assert np.array_equal(r1.fold_test[m, 2, t], logits[row])
    assert np.allclose(r1.fold_test[m].mean(0), r1.inputs.test.logits[m], atol=1e-5)


@pytest.mark.slow
def test_a_job_learns_its_folds_pseudo_labels_and_never_validates_on_them(make_spec):
    """A job given every eval photo labelled with one class (a drastic round 1) predicts that class
    on most eval photos; its OOF rows stay the fold's training people, and its log and result
    count the pseudo rows. (Class 10 is an incorrectly worn mask: 1 eval photo in 7 shows one,
    so a job that did not learn the pseudo labels predicts it on far fewer than half.)"""
    from tasks.data.preparation import prepare
    from tasks.job import fit_samples, split_fold, train_job
    from tasks.job_io import Job
    from tasks.pseudo.fold_sets import PseudoSet

    plain = make_spec("train.epochs=2", "train.mix.prob=0", name="plain")
    dataset = prepare(plain, verbose=False)
    ids = dataset.eval["image_key"].to_numpy(dtype=object)
    target = 10
    probs = np.full((len(ids), NUM_CLASSES), 0.1 / (NUM_CLASSES - 1), np.float32)
    probs[:, target] = 0.9
    rows = PseudoSet(ids, np.full(len(ids), target), probs[:, target].copy(), probs)
    spec = make_spec("train.epochs=2", "train.mix.prob=0", f"pseudo={{source: {plain.out_dir}, weight: 2}}",
                     name="plain")
    fit, val = split_fold(dataset, spec, 0, spec.train_for(spec.models[0]))
    samples = fit_samples(spec, Job("test_convnext", 0, spec.out_dir, pseudo=rows), dataset, fit, log=lambda s: None)
    assert len(samples.rows) == len(fit) + len(ids) and len(samples.arrays) == 2
    assert np.isnan(samples.ages[len(fit):]).all() and (samples.weights[len(fit):] == 2).all()
    assert (samples.labels[len(fit):] == target).all() and not np.isnan(samples.ages[:len(fit)]).any()
    assert (samples.targets[len(fit):].max(1) == 1).all()  # hard: one-hot
    soft = spec.model_copy(update={"pseudo": spec.pseudo.model_copy(update={"soft": True})})
    soft_samples = fit_samples(soft, Job("test_convnext", 0, spec.out_dir, pseudo=rows), dataset, fit, log=print)
    assert np.array_equal(soft_samples.targets[len(fit):], probs)  # soft: round 1's probabilities
    lines: list[str] = []
    with_pseudo = train_job(spec, Job("test_convnext", 0, spec.out_dir / "with", pseudo=rows), dataset=dataset,
                            log=lines.append)
    assert f"+ {len(ids)} pseudo-labelled eval photos (hard labels, weight 2)" in lines[0]
    assert with_pseudo.pseudo_images == len(ids)
    _, logits, _ = read_logits(with_pseudo.test_path)
    assert (logits.argmax(1) == target).mean() > 0.5
    oof, _, _ = read_logits(with_pseudo.oof_path)
    assert set(oof.image_key) == set(val.image_key)  # validation: fold 0's people only


def fake_round1(synth_root, results, pseudo: str):
    """Round 1 as a results folder for the real synthetic rows (its own prepare: the same folds),
    with random logits, not training: fold 1's models are sure of every eval photo, fold 0's are
    not. Returns round 2's spec, taking its pseudo labels from it with `pseudo` settings."""
    from tasks.data.preparation import prepare, read_folds, rows_hash
    from tests.helpers.fake_logits import eval_frame, oof_frame
    from tests.helpers.specs import shrunk_spec

    r1 = shrunk_spec(synth_root, results, name="r1").resolved()
    dataset = prepare(r1, verbose=False)
    people = dataset.train.merge(read_folds(r1, dataset)[["image_key", "fold"]], on="image_key")
    people = people.rename(columns={"label": "target"})
    rng = np.random.default_rng(0)
    meta = LogitsMeta(rows_hash=rows_hash(r1, dataset))
    oof = rng.standard_normal((len(people), NUM_CLASSES)).astype(np.float32)
    write_logits(r1.out_dir / "oof.parquet", logits_table(oof_frame(people, "test_convnext", "r1"), oof, meta))
    ids = dataset.eval["image_key"].to_numpy(dtype=object)
    test = [rng.standard_normal((len(ids), NUM_CLASSES)).astype(np.float32) * scale for scale in (1, 30)]
    frames = [eval_frame(ids, "test_convnext", k, "r1") for k in (0, 1)]
    write_logits(r1.out_dir / "test.parquet", logits_table(pd.concat(frames, ignore_index=True),
                                                           np.concatenate(test), meta))
    return shrunk_spec(synth_root, results, f"pseudo={{source: {r1.out_dir}, {pseudo}}}", name="r2")


@pytest.mark.slow
def test_round_two_on_ray_trains_each_fold_on_its_own_set(synth_root, tmp_path):
    from orchestrator.cluster.experiment_run import run_experiment
    from tasks.job_io import JobResult

    spec = fake_round1(synth_root, tmp_path / "results", "threshold: 0.2")
    first = run_experiment(spec)
    assert len(first.done) == 2 and not first.failed
    kept = {k: read_pseudo(pseudo_path(spec.out_dir, k)) for k in (0, 1)}
    assert 0 < len(kept[0]) < len(kept[1])  # fold 1's round-1 model was sure of more photos
    for job_id in first.done:
        result = JobResult.read(spec.out_dir / "jobs" / job_id)
        assert result.pseudo_images == len(kept[result.fold])  # its own fold's set reached its worker
        assert "pseudo-labelled eval photos" in (spec.out_dir / "jobs" / job_id / "job.log").read_text()
    again = run_experiment(spec)
    assert sorted(again.cached) == sorted(first.done) and not again.done  # rebuilt labels, same identity
    # A higher threshold changes fold 0's rows only (fold 1's are all near-certain): only fold 0 reruns.
    stricter = spec.model_copy(update={"pseudo": spec.pseudo.model_copy(update={"threshold": 0.3})})
    plan = run_experiment(stricter, dry_run=True)
    assert [j for j in first.done if "fold1" in j] == list(plan.cached)


@pytest.mark.parametrize("per_fold", [True, False])
def test_the_report_says_where_the_labels_came_from_and_whether_oof_is_honest(round1, per_fold):
    from orchestrator.analysis.reporting.second_round import pseudo_section

    tmp, exp, people, answers = round1
    spec = round2(tmp, exp, threshold=0.35, per_fold=per_fold)
    assert pseudo_section(spec.out_dir) == ""  # nothing built yet: no section
    out, _ = build(spec, people, len(answers), write=True)
    page = pseudo_section(spec.out_dir)
    assert ("OOF optimistic" in page) != per_fold and ("stay honest" in page) == per_fold
    assert all(f"<td>{len(out.sets[k])}</td>" in page for k in range(K))
    assert "data:image/png;base64," in page  # the plot, embedded


def test_run_without_its_round_one_stops_before_writing_anything(synth_root, tmp_path, capsys):
    from orchestrator import run
    from tests.helpers.specs import shrunk_cli

    code = run.main(shrunk_cli(synth_root, tmp_path, f"pseudo={{source: {tmp_path / 'r1'}}}", name="r2"))
    assert code == 2
    assert f"pseudo.source: {tmp_path / 'r1'} is not an experiment's results folder" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()


def test_a_round_two_refused_for_its_folds_writes_nothing(synth_root, tmp_path, capsys):
    """Round 1's folds are checked before prepare writes spec.yaml, manifest.json or folds.parquet,
    and the refused run leaves no results/<name>/ (nor its lock) behind."""
    from orchestrator import prepare, run
    from tests.helpers.specs import shrunk_cli

    fake_round1(synth_root, tmp_path, "threshold: 0.2")
    args = shrunk_cli(synth_root, tmp_path, f"pseudo={{source: {tmp_path / 'r1'}}}", "folds.seed=99", name="r2")
    for main in (run.main, prepare.main):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("error: ") == 1 and "folds differ from this experiment's" in err, err
        assert not (tmp_path / "r2").exists()


def test_another_eval_set_of_the_same_size_names_the_first_difference(round1):
    tmp, exp, people, answers = round1
    ids = eval_ids(len(answers)).copy()
    ids[[3, 7]] = ["f" * 40 + ".jpg", "e" * 40 + ".jpg"]
    with pytest.raises(PseudoError) as info:
        build_pseudo(round2(tmp, exp), people[["image_key", "person", "fold"]], ids, False, log=lambda s: None)
    assert (f"its eval set differs from this experiment's: 2 of this experiment's {len(ids)} ImageIDs are not in "
            f"round 1's {len(ids)}, the first {'f' * 40}.jpg (row 4 of eval/info.csv)") in str(info.value)


@pytest.mark.parametrize("damage, problem", [('{"weights": ', "is not valid JSON (line 1, column 13: Expecting value)"),
                                             ("[]", "is not a blend record (no method and metric)"),
                                             ("", "is not valid JSON")], ids=["truncated", "a_list", "empty"])
def test_a_damaged_round1_blend_record_is_one_clear_error(round1, damage, problem):
    tmp, exp, people, answers = round1
    write_blend_choice(exp, "soft_greedy")
    (exp / "blend" / "weights.json").write_text(damage)
    with pytest.raises(PseudoError) as info:
        build(round2(tmp, exp), people, len(answers))
    assert str(info.value).startswith(f"{exp / 'blend' / 'weights.json'}: round 1's blend record {problem}")
    assert f"blend round 1 again (python -m orchestrator.blend --results {exp}) or remove its blend/" in str(info.value)


# pseudo.per_class: a threshold per class from round 1's OOF calibration, so the rare classes get
# pseudo rows where the blend is reliable for them, and fold k's people never pick them.

def one_hot_probs(labels: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    probs = np.full((len(labels), NUM_CLASSES), 0.0)
    probs[np.arange(len(labels)), labels] = confidence
    rest = (1 - confidence) / (NUM_CLASSES - 1)
    return probs + np.where(probs == 0, rest[:, None], 0)


def test_each_class_gets_the_lowest_threshold_that_keeps_its_precision():
    # class 3: right at every confidence above 0.4, wrong below; class 5: right half the time anywhere
    conf3 = np.linspace(0.2, 0.6, 41)
    conf5 = np.linspace(0.3, 0.99, 40)
    labels = np.r_[np.full(41, 3), np.full(40, 5)]
    target = np.r_[np.where(conf3 >= 0.4 - 1e-9, 3, 0), np.where(np.arange(40) % 2 == 0, 5, 1)]
    probs = one_hot_probs(labels, np.r_[conf3, conf5])
    bar = class_thresholds(labels, probs, target, precision=0.9, min_rows=5)
    assert bar[3] == pytest.approx(0.38, abs=0.011)  # the deepest prefix still >= 90% right
    assert np.isinf(bar[5]) and np.isinf(bar[0])  # never precise, never predicted
    few = class_thresholds(labels, probs, target, precision=0.9, min_rows=100)
    assert np.isinf(few).all()  # a threshold must rest on min_rows rows
    kept = select_ranked(labels, probs, bar, cap=5)
    assert len(kept) == 5 and (labels[kept] == 3).all() and probs[kept, 3].min() >= np.sort(conf3)[-5] - 1e-9


def test_per_class_reaches_more_classes_than_one_threshold(round1):
    tmp, exp, people, answers = round1
    one, _ = build(round2(tmp, exp, threshold=0.5, max_share=0.9), people, len(answers))
    per, text = build(round2(tmp, exp, per_class={"precision": 0.6, "min_rows": 3}, max_share=0.9), people,
                      len(answers))
    assert "classes have one" in text and per.summary["per_class"] == {"precision": 0.6, "min_rows": 3}
    for k in one.sets:
        bar = np.array([np.inf if t is None else t for t in per.summary["folds"][str(k)]["thresholds"]])
        rows = per.sets[k]
        assert (rows.confidence >= bar[rows.label] - 1e-6).all()
        assert len(np.unique(rows.label)) > len(np.unique(one.sets[k].label))


def test_fold_ks_people_never_choose_its_per_class_rows(round1):
    tmp, exp, people, answers = round1
    spec = round2(tmp, exp, per_class={"precision": 0.6, "min_rows": 3})
    before, _ = build(spec, people, len(answers))
    rewrite_logits(exp, "oof", 0, shuffled)  # fold 0's OOF rows: its people's labels through calibration
    after, _ = build(spec, people, len(answers))
    assert after.hashes[0] == before.hashes[0]
    assert after.hashes[1] != before.hashes[1] or after.hashes[2] != before.hashes[2]


def test_per_class_settings_are_validated_by_field(round1):
    tmp, exp, _, _ = round1
    with pytest.raises((SpecError, ValueError), match="precision"):
        round2(tmp, exp, per_class={"precision": 1.5})
    with pytest.raises((SpecError, ValueError), match="per_class"):
        round2(tmp, exp, per_class={"precison": 0.9})
