"""`python -m orchestrator.explain`: Grad-CAM of the fold models on their OOF photos, face focus."""
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from orchestrator import explain
from orchestrator.analysis.reporting.focus import explain_section
from orchestrator.analysis.saliency import pipeline as explain_run
from orchestrator.analysis.saliency.cam import NoCamLayer, box_share, face_focus, find_cam_layer
from orchestrator.analysis.saliency.selection import pick_photos
from tasks.data.preparation import prepare, rows_hash
from tests.helpers.specs import shrunk_spec
from tests.helpers.trained import train_and_blend


def test_face_focus_is_high_for_a_box_around_the_cam_and_low_elsewhere():
    cam = np.zeros((64, 48), np.float32)
    cam[8:24, 12:36] = 1.0  # all the evidence in the upper middle
    cam[8:24, 12:14] = 0.5
    around = np.array([12 / 48, 8 / 64, 36 / 48, 24 / 64])
    assert face_focus(cam, around) == pytest.approx(1.0)
    assert face_focus(cam, np.array([0, 0.5, 1, 1])) == 0.0  # the lower half holds none of it
    half = np.array([24 / 48, 0, 1, 1])  # the right half holds 12 of the 23 full-weight columns
    assert face_focus(cam, half) == pytest.approx(12 / 23)
    assert box_share((64, 48), around) == pytest.approx((16 * 24) / (64 * 48))
    assert face_focus(np.ones((64, 48)), around) == pytest.approx(box_share((64, 48), around))  # even CAM
    assert np.isnan(face_focus(cam, np.full(4, np.nan))) and np.isnan(face_focus(0 * cam, around))


def test_contact_sheet_captions_name_the_person_and_never_run_into_each_other():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    from orchestrator.analysis.saliency.figures import sheet_figure, tile_name

    assert tile_name("000283_female_Asian_30/incorrect_mask") == "000283 incorrect_mask"
    n, h, w = 8, 64, 48  # the demo's cache size; the longest captions (incorrect, male, 30-59, 0.34)
    tiles = pd.DataFrame({"fold": 2, "image_key": [f"00{i:04d}_male_Asian_45/incorrect_mask" for i in range(n)],
                          "target": 4, "pred": 4 + 6 * (np.arange(n) % 2), "confidence": 0.34})
    rng = np.random.default_rng(0)
    fig = sheet_figure("mistakes", tiles, rng.integers(0, 255, (n, h, w, 3)).astype(np.uint8),
                       rng.random((n, h, w)).astype(np.float32), np.full((n, 4), np.nan), None, columns=8)
    renderer = FigureCanvasAgg(fig).get_renderer()
    captions = [t for t in fig.findobj(Text) if " · fold " in t.get_text()]
    titles = sorted((t.get_window_extent(renderer) for t in captions), key=lambda box: box.x0)
    assert len(titles) == n and "000003 incorrect_mask · fold 2" in fig.axes[3].get_title(loc="left")
    assert all(a.x1 < b.x0 for a, b in zip(titles, titles[1:]))  # a gap between neighbours in the row


def test_the_target_layer_rule():
    import timm

    convnext = timm.create_model("test_convnext", num_classes=0)
    # At 64x48 the last stage is a 2x1 map, too coarse to tell a face from its background.
    assert find_cam_layer(convnext, (64, 48)).name == "stages.2"
    assert find_cam_layer(convnext, (128, 96)).name == "stages.3"
    with pytest.raises(NoCamLayer, match="test_vit: its stages output 3-D tokens"):
        find_cam_layer(timm.create_model("test_vit", num_classes=0), (160, 160), "test_vit")


def test_picks_mistakes_by_confidence_suspects_and_a_seeded_sample():
    rows = pd.DataFrame({"fold": [0] * 6 + [1] * 6, "image_key": [f"p{i // 3}/mask{i % 3 + 1}" for i in range(12)],
                         "person": [f"p{i // 3}" for i in range(12)], "target": [0, 0, 0, 1, 1, 1] * 2,
                         "pred": [1, 1, 0, 0, 1, 1] * 2, "confidence": np.linspace(0.1, 0.9, 12)})
    picks = pick_photos(rows, 1, 2, ["p3"], seed=0)
    mistakes = picks[picks["kind"] == "mistake"]
    assert list(mistakes["image_key"]) == ["p2/mask2", "p3/mask1"]  # the most confident per given class
    assert list(picks.loc[picks["kind"] == "suspect", "image_key"]) == ["p3/mask1", "p3/mask2", "p3/mask3"]
    sample = picks[picks["kind"] == "sample"]
    assert sample.groupby("fold").size().tolist() == [2, 2]
    assert sample.equals(pick_photos(rows, 1, 2, [], seed=0).query("kind == 'sample'").set_axis(sample.index))


@pytest.fixture(scope="module")
def experiment(synth_root, tmp_path_factory):
    """Two folds of one tiny model, 1 epoch each, gathered and blended; an audit.csv naming one suspect."""
    results = tmp_path_factory.mktemp("explain")
    spec = shrunk_spec(synth_root, results, name="explaintest")
    exp = train_and_blend(spec, "--set", "blend.rounds=5")
    person = pd.read_parquet(exp / "folds.parquet")["person"].iloc[0]  # the training rows' first person
    pd.DataFrame([{"person": person, "attribute": "gender", "rank": 1, "score": 0.1, "p_wrong": 0.9,
                   "given": "male", "suggested": "female", "suspect": True}]).to_csv(exp / "audit.csv", index=False)
    return exp, person


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow  # shares one fixture of two trained fold models
def test_explain_writes_face_focus_sheets_and_the_report_and_leaves_the_blend(experiment, synth_root, capsys):
    exp, person = experiment
    before = _hashes(exp / "blend")
    code = explain.main(["--results", str(exp), "--sample", "6", "--boxes", str(synth_root / "truth/face_boxes.csv")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "test_convnext fold 0" in out and "test_convnext fold 1" in out  # progress per fold model
    assert _hashes(exp / "blend") == before
    focus = pd.read_csv(exp / "explain" / "face_focus.csv")
    assert list(focus.columns[:4]) == ["model", "fold", "images", "face_focus"]
    assert sorted(zip(focus["model"], focus["fold"])) == [("test_convnext", 0), ("test_convnext", 1)]
    assert ((focus["images"] > 0) & (focus["images"] <= 6)).all()
    assert focus["face_focus"].between(0, 1).all() and focus["box_share"].between(0.05, 0.5).all()
    for stem in ("mistakes", "suspects", "sample"):
        assert (exp / "explain" / f"{stem}_test_convnext.png").stat().st_size > 5000, stem
    html = (exp / "report.html").read_text()
    assert "Where the models look" in html and html.count("data:image/png;base64") >= 4 + 4


@pytest.mark.slow  # shares one fixture of two trained fold models
def test_a_model_without_a_target_layer_is_skipped_with_the_reason(experiment, tmp_path, monkeypatch, capsys):
    exp = tmp_path / experiment[0].name
    shutil.copytree(experiment[0], exp)
    shutil.rmtree(exp / "explain", ignore_errors=True)

    def no_layer(body, size, backbone=""):
        raise NoCamLayer(f"{backbone}: its stages output 3-D tokens")

    monkeypatch.setattr(explain_run, "find_cam_layer", no_layer)
    assert explain.main(["--results", str(exp)]) == 0
    out = capsys.readouterr().out
    assert "test_convnext: skipped, no Grad-CAM target layer: test_convnext: its stages output 3-D tokens" in out
    assert not list((exp / "explain").glob("*.png")) and not (exp / "explain" / "face_focus.csv").exists()


@pytest.mark.slow  # shares one fixture of two trained fold models
def test_a_bad_boxes_file_names_its_lines(experiment, tmp_path, capsys):
    bad = tmp_path / "boxes.csv"
    bad.write_text("image,x0,y0,x1,y1\nnobody/mask1,1,1,5,5\n000001/mask1,a,1,5,5\n")
    assert explain.main(["--results", str(experiment[0]), "--boxes", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"--boxes: {bad}: 2 bad row(s)" in err and "line 2: unknown image 'nobody/mask1'" in err
    assert "line 3: " in err and "must be numbers" in err and "Traceback" not in err


def test_without_a_finished_job_it_says_what_to_run(make_spec, capsys):
    spec = make_spec(name="nojobs")
    prepare(spec, verbose=False)
    assert explain.main(["--results", str(spec.out_dir)]) == 2
    assert "no finished job" in capsys.readouterr().err


@pytest.mark.slow  # shares the fixture above
def test_the_ray_task_body_computes_the_local_cams(experiment):
    """`--ray`'s task (run here without Ray: its plumbing mirrors blend --reinfer's) loads the data
    and the weights on its own and returns what the local runner computes."""
    from orchestrator.analysis.pseudo_labels.outputs import saved_hashes
    from orchestrator.analysis.results_folder import load_experiment
    from orchestrator.analysis.saliency.selection import explain_job, explainable_jobs
    from orchestrator.cluster.cam_tasks import explain_task
    from tasks.data.preparation import load_dataset

    exp = experiment[0]
    spec = load_experiment(exp)
    job = explainable_jobs(spec, exp, rows_hash(spec, load_dataset(spec, verbose=False)), saved_hashes(spec)).jobs[1]
    picks = pd.DataFrame({"image_key": pd.read_parquet(job.out_dir / "oof.parquet")["image_key"][:5], "pred": 3})
    remote = explain_task(spec.model_dump(mode="json"), job.model, job.fold, str(job.out_dir), picks, None)
    local = explain_job(spec, job, picks, load_dataset(spec, verbose=False))
    assert remote.layer == local.layer == "stages.2" and remote.cams.shape == (5, 64, 48)
    np.testing.assert_array_equal(remote.images, local.images)
    np.testing.assert_allclose(remote.cams, local.cams, atol=1e-5)
    assert remote.cams.max() > 0


@pytest.mark.parametrize("option, value", [("--sample", "abc"), ("--per-class", "0"), ("--sample", "2.5")])
def test_a_bad_count_is_said_in_the_options_words(capsys, option, value):
    with pytest.raises(SystemExit) as info:
        explain.parse_args([option, value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "_count" not in err, err
    assert f"argument {option}: must be a whole number of at least 1, got '{value}'" in err


# --- a fake experiment: two "finished" fold jobs with untrained weights, no training ---------

@pytest.fixture
def untrained(make_spec):
    """A prepared experiment whose two fold jobs hold random weights and random OOF logits: all
    explain reads, made in a second. Returns the results folder."""
    from tasks.data.preparation import read_folds
    from tasks.job_io import JobResult, planned_jobs, write_result
    from tasks.logits import LogitsMeta, logits_table, write_logits
    from tasks.train.model import build_model

    spec = make_spec(name="untrained")
    dataset = prepare(spec, verbose=False)
    rows = dataset.train.merge(read_folds(spec, dataset)[["image_key", "fold"]], on="image_key")
    model = spec.models[0]
    net = build_model(model.model_copy(update={"pretrained": False, "pretrained_path": None}), spec.train_for(model))
    rng = np.random.default_rng(0)
    for fold, out in enumerate(p.out_dir for p in planned_jobs(spec, rows_hash(spec, dataset))):
        out.mkdir(parents=True)
        torch.save(net.state_dict(), out / "best.pt")
        held = rows[rows["fold"] == fold]
        frame = pd.DataFrame({"experiment": spec.name, "model": model.name, "fold": fold, "split": "oof",
                              "image_key": held["image_key"], "person": held["person"], "target": held["label"]})
        write_logits(out / "oof.parquet", logits_table(frame, rng.standard_normal((len(frame), 18)),
                                                       LogitsMeta(rows_hash=rows_hash(spec, dataset))))
        write_result(out, JobResult(spec.name, model.name, model.backbone, fold, 0, 1, 1, False, {"macro_f1": 0.1},
                                    1.0, 1, len(frame), 1, "cpu", 1.0, "", "", "", ""))
    return spec.out_dir


def explain_cli(exp: Path, *more: str) -> list[str]:
    return ["--results", str(exp), "--sample", "3", "--per-class", "1", *more]


def test_explain_deletes_only_files_it_wrote_itself(untrained, synth_root, tmp_path):
    exp = untrained
    (exp / "explain").mkdir()
    mine = {"mynotes.csv": "person,note\n", "sample_of_mine.png": "not a sheet"}
    for name, text in mine.items():
        (exp / "explain" / name).write_text(text)
    boxes = str(synth_root / "truth/face_boxes.csv")
    assert explain.main(explain_cli(exp, "--boxes", boxes)) == 0
    assert (exp / "explain" / "face_focus.csv").is_file()
    assert explain.main(explain_cli(exp)) == 0  # no boxes: its own face_focus files are stale now
    assert not (exp / "explain" / "face_focus.csv").exists() and not (exp / "explain" / "face_focus.png").exists()
    assert (exp / "explain" / "sample_test_convnext.png").is_file()
    assert {n: (exp / "explain" / n).read_text() for n in mine} == mine  # the user's files: untouched
    section = explain_section(exp)
    assert "test_convnext: A random sample" in section and "of_mine" not in section  # the report shows its own
    # explain/ a link to a folder of other files: they are not explain's to delete
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("face_focus.csv", "mistakes_x.png", "notes.csv"):
        (elsewhere / name).write_text("theirs")
    shutil.rmtree(exp / "explain")
    (exp / "explain").symlink_to(elsewhere)
    assert explain.main(explain_cli(exp)) == 0
    assert all((elsewhere / n).read_text() == "theirs" for n in ("face_focus.csv", "mistakes_x.png", "notes.csv"))


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_a_fold_whose_weights_do_not_load_is_named_and_the_other_folds_kept(untrained, capsys, damage):
    exp = untrained
    [job] = (exp / "jobs").glob("*-fold1-*")
    if damage == "garbage":
        (job / "best.pt").write_bytes(b"not a checkpoint")
    else:
        (job / "best.pt").unlink()
    assert explain.main(explain_cli(exp)) == 1
    out, err = capsys.readouterr()
    reason = "does not load into test_convnext" if damage == "garbage" else "missing best.pt"
    assert "fold 1: " in err and reason in err, err
    assert "test_convnext lost 1 of 2 folds" in err and "sheets show fold 0 only" in err, err
    sample = pd.read_parquet(job.parent.glob("*-fold0-*").__next__() / "oof.parquet")  # fold 0's photos
    assert (exp / "explain" / "sample_test_convnext.png").is_file() and len(sample)
    assert "wrote 0 files" not in out


def test_explain_takes_the_experiments_lock(untrained, capsys):
    from tasks.lock import experiment_lock

    with experiment_lock(untrained, "a run"):
        assert explain.main(explain_cli(untrained)) == 2
    err = capsys.readouterr().err
    assert "(a run, since " in err and "is working on this experiment. Wait for it to finish" in err
    assert "then run explain again" in err and "--set name" not in err and "Traceback" not in err
    assert not (untrained / "explain").exists()


def test_a_job_of_settings_since_changed_is_not_explained(untrained, capsys):
    """Explain finds jobs by the spec's planned ids, as run and blend do: fold 1's folder moved
    to another id (a run with other settings) is left out and named, not taken as fold 1."""
    exp = untrained
    [job] = (exp / "jobs").glob("*-fold1-*")
    job.rename(job.with_name("test_convnext-fold1-0badc0de"))
    assert explain.main(explain_cli(exp)) == 1
    err = capsys.readouterr().err
    assert "fold 1: not run with these settings" in err and "0badc0de" not in err, err
    assert "test_convnext lost 1 of 2 folds" in err


def test_data_moved_with_set_data_root_is_still_explained(untrained, synth_root, tmp_path, capsys):
    """The data copied elsewhere (copy2 keeps the files' times, as mv and rsync -a do) and named by
    --set data.root: the jobs' ids come from the rows as run, so explain still finds them."""
    moved = tmp_path / "moved"
    shutil.copytree(synth_root, moved)
    assert explain.main(explain_cli(untrained, "--set", f"data.root={moved}")) == 0, capsys.readouterr().err
    assert (untrained / "explain" / "sample_test_convnext.png").is_file()


def test_with_no_suspect_the_suspects_sheet_shows_the_people_worth_a_look(tmp_path):
    from orchestrator.analysis.saliency.selection import suspect_people

    rows = [("p1", "gender", 1, 0.9, "suspect"), ("p2", "gender", 2, 0.2, "review"), ("p3", "age", 1, 0.3, "review"),
            ("p4", "age", 2, 0.005, ""), ("p1", "age", 3, 0.004, "")]
    table = pd.DataFrame(rows, columns=["person", "attribute", "rank", "p_wrong", "tier"])
    table.assign(suspect=table.tier == "suspect").to_csv(tmp_path / "audit.csv", index=False)
    assert suspect_people(tmp_path) == ["p1", "p3", "p2"]  # the suspect, then the tier by p_wrong
    assert suspect_people(tmp_path, count=1) == ["p1"]
    table.assign(suspect=False, tier=table.tier.replace("suspect", "review")).to_csv(tmp_path / "audit.csv", index=False)
    assert suspect_people(tmp_path) == ["p1", "p3", "p2"]  # nobody past the cut: still the doubtful ones
