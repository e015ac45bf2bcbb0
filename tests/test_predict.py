"""`python -m orchestrator.predict`: the chosen ensemble on any photos, the eval photos' own path."""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator import predict
from orchestrator.analysis.ensembles import fitting
from orchestrator.analysis.ensembles.fitting import FittedBlend, fit_all
from orchestrator.analysis.ensembles.recipes import EQUAL, plan_recipes
from orchestrator.analysis.predictions.combine import blend_logits
from orchestrator.analysis.predictions.ensemble import Ensemble
from orchestrator.analysis.results import load_blend_inputs
from orchestrator.analysis.results_folder import load_experiment, planned_jobs_as_run
from tasks.data.preparation import load_dataset
from tasks.logits import read_logits
from tasks.serving.images import Decoding, decode_photos
from tasks.serving.members import FoldMember, ModelInput
from tasks.serving.photos import PhotoError, collect_photos
from tasks.spec.experiment import BlendSpec
from tests.helpers.fake_logits import fake_models, make_people, make_targets, write_experiment
from tests.helpers.specs import shrunk_spec

MODELS = {"good": {}, "gender_eye": {"strength": (2.0, 3.5, 0.8)}, "noise": {"strength": (1.0, 0.5, 0.3)}}


def run_cli(capsys, *args) -> tuple[int, str]:
    code = predict.main([str(a) for a in args])
    return code, capsys.readouterr().err


def error_line(err: str) -> str:
    """The error, which must be the last line printed and one line long."""
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, err
    return lines[-1]


def test_photos_are_files_folders_and_lists_read_as_the_loader_reads(tmp_path):
    for name in ("a.jpg", "b.PNG", "._a.jpg", ".hidden.jpg", "notes.txt", "sub/c.jpeg", ".git/d.jpg", "sub/._c.jpeg"):
        (tmp_path / "photos" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / name).write_bytes(b"x")
    (tmp_path / "one.jpg").write_bytes(b"x")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "list.txt").write_text("# photos\n../one.jpg\n\n/abs/elsewhere.png\n")
    found = collect_photos([tmp_path / "photos", tmp_path / "lists" / "list.txt", tmp_path / "one.jpg"])
    assert [Path(p).relative_to(tmp_path).as_posix() if p.startswith(str(tmp_path)) else p for p in found.paths] == [
        "photos/a.jpg", "photos/b.PNG", "photos/sub/c.jpeg", "lists/../one.jpg", "/abs/elsewhere.png", "one.jpg"]
    assert found.repeated == 0
    assert collect_photos([tmp_path / "one.jpg", tmp_path / "one.jpg"]).repeated == 1


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "nowhere", "nowhere: no such file or folder"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "empty: no photos (.jpg, .jpeg, .png) in this folder or below"),
    (lambda d: (d / "blob.bin").write_bytes(b"\xff\xfe\x00\x81") and d / "blob.bin",
     "blob.bin: neither a photo (.jpg, .jpeg, .png) nor a UTF-8 text file of photo paths"),
    (lambda d: (d / "list.txt").write_text("# nothing\n\n") and d / "list.txt",
     "list.txt: a text file that lists no photo paths"),
])
def test_a_photo_argument_naming_nothing_is_one_line_and_exit_2(tmp_path, capsys, make, message):
    path = make(tmp_path)
    with pytest.raises(PhotoError, match="^" + str(path).replace(".", r"\.").split(path.name)[0]):
        collect_photos([path])
    code, err = run_cli(capsys, path, "--results", tmp_path)
    assert code == 2 and message in error_line(err) and err.count("\n") == 1, err


def fake_experiment(tmp_path: Path, **blend_opts) -> Path:
    people = make_people(30, 3, seed=4)
    answers = make_targets(60, seed=5)
    return write_experiment(tmp_path, people, fake_models(people, answers, 3, MODELS), answers, 3, rounds=8,
                            **blend_opts)


def test_every_fitted_method_applied_to_the_fold_models_logits_gives_its_test_labels(tmp_path):
    """The record weights.json keeps, read back and applied by predict's combine step to each fold
    model's logits, answers as the blend answered the eval set: every method, hard votes too."""
    exp = fake_experiment(tmp_path)
    spec = load_experiment(exp)
    inputs = load_blend_inputs(exp, spec, log=lambda s: None)
    blend_spec = BlendSpec(rounds=8, decode="both")
    fitted = fit_all(plan_recipes(blend_spec), inputs.oof.logits, inputs.oof.target, blend_spec)
    frame, logits, _ = read_logits(exp / "test.parquet")
    models = inputs.oof.models
    members = tuple(FoldMember(f"{m}/{k}", m, k, Path("unused"), Decoding((8, 8), None), ModelInput((8, 8), [], False))
                    for m in models for k in range(3))
    per_member = {f"{m}/{k}": logits[((frame.model == m) & (frame.fold == k)).to_numpy()] for m in models for k in range(3)}
    assert len(fitted) == 17 and {f.recipe.vote for f in fitted.values()} == {"soft", "hard"}
    for name, method in fitted.items():
        record = json.loads(json.dumps(method.to_record(models)))  # as the file holds it
        ensemble = Ensemble(exp, record, models, FittedBlend.from_record(record, models), members)
        out = blend_logits(ensemble, per_member, len(inputs.test.image_ids))
        assert np.array_equal(out.labels, fitting.predict(method, inputs.test.logits).labels), name  # as fit_blend
        assert np.allclose(out.probs.sum(1), 1, atol=1e-5)


def test_an_experiment_without_a_blend_says_to_run_blend(tmp_path, synth_root, capsys):
    exp = fake_experiment(tmp_path)
    photo = next((synth_root / "eval" / "images").iterdir())
    code, err = run_cli(capsys, photo, "--results", exp)
    line = error_line(err)
    assert code == 2 and f"{exp}: no blend yet" in line and f"run `python -m orchestrator.blend --results {exp}` first" in line


def test_missing_fold_weights_are_named_before_any_photo_is_read(tmp_path, synth_root, capsys):
    exp = fake_experiment(tmp_path)
    inputs = load_blend_inputs(exp, load_experiment(exp), log=lambda s: None)
    [equal] = fit_all([EQUAL], inputs.oof.logits, inputs.oof.target, BlendSpec()).values()
    weights = {"rows_hash": inputs.oof.rows_hash, **equal.to_record(inputs.oof.models)}  # as blend writes it
    (exp / "blend").mkdir()
    (exp / "blend" / "weights.json").write_text(json.dumps(weights))
    (exp / "manifest.json").write_text(json.dumps({"rows_hash": weights["rows_hash"]}))
    jobs = planned_jobs_as_run(exp)
    for job in jobs:
        job.out_dir.mkdir(parents=True)
        (job.out_dir / "result.json").write_text("{}")
        (job.out_dir / "best.pt").write_bytes(b"weights")
    gone = next(j for j in jobs if weights["weights"][j.model] > 0)
    (gone.out_dir / "best.pt").unlink()
    capsys.readouterr()
    code, err = run_cli(capsys, next((synth_root / "eval" / "images").iterdir()), "--results", exp)
    assert code == 2 and f"{gone.out_dir / 'best.pt'}: fold weights missing ({gone.model} fold {gone.fold})" in error_line(err)


def test_new_photos_get_the_eval_caches_pixels_and_face_crop(synth_root, tmp_path):
    """decode_photos is the cache build itself: with a face crop (here every photo's fallback box,
    grown by the margin, its background blurred), the same pixels and boxes as the eval cache
    prepare made for those photos."""
    spec = shrunk_spec(synth_root, tmp_path, "data.face={detector: none, margin: 0.2, fallback: center, "
                                             "background: blur}")
    dataset = load_dataset(spec, verbose=False)
    paths = [str(synth_root / p) for p in dataset.eval["path"][:40]]
    photos = decode_photos(paths, Decoding.of(spec.data), tmp_path / "scratch", log=lambda s: None)
    expected = dataset.eval_cache.open()[dataset.eval_cache.rows(dataset.eval["image_key"][:40])]
    assert photos.ok.all() and np.array_equal(photos.cache.open()[photos.cache.rows(photos.paths)], expected)
    faces = pd.read_parquet(dataset.eval_cache.faces_path).set_index("image_key").loc[dataset.eval["image_key"][:40]]
    assert np.array_equal(photos.boxes, faces[["x0", "y0", "x1", "y1"]].to_numpy())
    assert set(photos.box_source) == {"fallback"} and list(photos.box_source) == list(faces["source"])
    assert np.isfinite(photos.boxes).all() and expected.any()


@pytest.mark.slow  # trains the session's experiment
def test_the_eval_photos_answer_as_the_submission_and_unreadable_photos_are_listed(blended_experiment, synth_root,
                                                                                    tmp_path, capsys):
    photos = sorted((synth_root / "eval" / "images").iterdir())
    data = photos[0].read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "not_a_photo.jpg").write_text("hello")
    (tmp_path / "list.txt").write_text("truncated.jpg\nnot_a_photo.jpg\n")
    out = tmp_path / "predictions.csv"
    capsys.readouterr()
    code, err = run_cli(capsys, synth_root / "eval" / "images", tmp_path / "list.txt", "--results", blended_experiment,
                        "--out", out, "--probs")
    table = pd.read_csv(out)
    submission = pd.read_csv(blended_experiment / "blend" / "submission.csv")
    merged = submission.merge(table.assign(ImageID=table["path"].map(os.path.basename)), on="ImageID", how="left",
                              validate="one_to_one")
    assert len(table) == len(submission) and merged["class"].notna().all()
    assert (merged["class"] == merged["ans"]).all(), (merged["class"] != merged["ans"]).sum()
    # two photos could not be read: listed, the rest predicted, exit status 1
    assert code == 1 and f"predicted {len(photos)} of {len(photos) + 2} photos with " in err
    assert " photos/s (decode " in err and "skipped 2 photos that could not be read (not in predictions.csv):" in err
    assert f"{tmp_path / 'truncated.jpg'}: unreadable image (" in err and f"{tmp_path / 'not_a_photo.jpg'}: unreadable" in err
    assert list(table.columns[:11]) == ["path", "class", "mask", "gender", "age", "prob", "face_source", "face_x0",
                                        "face_y0", "face_x1", "face_y1"]
    probs = table[[f"prob_{c}" for c in range(18)]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-4) and np.allclose(probs[np.arange(len(table)), table["class"]],
                                                                   table["prob"])
    words = [(("wear", "incorrect", "not_worn")[c // 6], ("male", "female")[c // 3 % 2], ("<30", "30-59", ">=60")[c % 3])
             for c in table["class"]]
    assert list(zip(table["mask"], table["gender"], table["age"])) == words
    assert table["face_x0"].isna().all()  # the experiment has no face crop
