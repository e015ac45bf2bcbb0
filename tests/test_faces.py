"""data.face: the real detector on a real photo, the boxes file, the crop, its hashes, the synth boxes."""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from orchestrator.analysis.reporting.crops import faces_section
from tasks.data.dataset import DataError
from tasks.data.preparation import load_dataset, prepare, rows_hash
from tasks.faces import detect as face_detect
from tasks.faces.boxes import read_boxes
from tasks.faces.crop import FaceRecord, cut, fallback_box, fit_aspect, grow, place
from tasks.faces.detect import DetectorMissing, HaarDetector
from tasks.job_io import job_hash
from tasks.spec.experiment import Experiment
from tasks.spec.face import FaceSpec
from tasks.synth.draw import face_boxes, make_look, make_shots, render_person
from tasks.synth.face_boxes import Framing

# A real face photo that an installed, pinned package ships (matplotlib's sample data).
HOPPER = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def hopper() -> Image.Image:
    assert HOPPER.is_file(), f"matplotlib no longer ships {HOPPER}"
    return Image.open(HOPPER).convert("RGB")


def test_haar_finds_the_real_face_where_it_was_moved(hopper):
    detector = HaarDetector(min_score=2)
    whole = detector.detect(np.asarray(hopper.convert("L")))
    assert whole is not None and whole.score > 10
    # The face sits in the upper middle of the 512x600 portrait.
    assert iou(whole.box, (150, 100, 380, 330)) > 0.8
    for scale, (left, top) in ((0.5, (0, 0)), (0.6, (150, 250)), (0.8, (-60, 40)), (0.45, (190, 20))):
        canvas = Image.new("RGB", (384, 512), (90, 120, 160))  # a phone photo's size
        canvas.paste(hopper.resize((round(512 * scale), round(600 * scale))), (left, top))
        found = detector.detect(np.asarray(canvas.convert("L")))
        moved = [v * scale + (left, top)[i % 2] for i, v in enumerate(whole.box)]
        assert found is not None, (scale, left, top)
        assert iou(found.box, moved) > 0.6, (scale, left, top, found.box, moved)
    assert detector.detect(np.full((512, 384), 128, np.uint8)) is None  # a blank wall has no face


def test_a_missing_detector_names_the_install_command(monkeypatch, tmp_path):
    import cv2

    monkeypatch.setattr(cv2.data, "haarcascades", str(tmp_path))  # OpenCV 5.0: no cascades
    with pytest.raises(DetectorMissing, match=r"pip install opencv-python-headless==4\.\d+"):
        HaarDetector(2)
    monkeypatch.setitem(sys.modules, "cv2", None)  # not installed at all
    with pytest.raises(DetectorMissing, match=r"pip install opencv-python-headless==4\.\d+.*detector=none"):
        face_detect.detector_version("haar")
    assert face_detect.detector_version("none") == "none"


def test_a_missing_detector_stops_prepare_before_any_decoding(make_spec, monkeypatch, tmp_path):
    import cv2

    monkeypatch.setattr(cv2.data, "haarcascades", str(tmp_path))
    spec = make_spec("data.face={detector: haar}", f"data.cache_dir={tmp_path / 'cache'}")
    with pytest.raises(DetectorMissing):
        load_dataset(spec, verbose=False)
    assert not list((tmp_path / "cache").glob("*.npy"))


def test_box_geometry():
    assert grow((10, 20, 30, 60), 0.5) == (0, 0, 40, 80)
    assert fit_aspect((0, 0, 10, 10), 4 / 3) == pytest.approx((0, -5 / 3, 10, 10 + 5 / 3))
    assert fit_aspect((0, 0, 10, 40), 2) == pytest.approx((-5, 0, 15, 40))
    assert place((-10, 5, 30, 45), 100, 100) == (0, 5, 40, 45)  # fits: moved in, not cut
    assert place((-10, -10, 130, 50), 100, 100) == (0, 0, 100, 60)  # too wide: clipped, y moved in
    assert fallback_box("full", 384, 512) == (0, 0, 384, 512)
    assert fallback_box("center", 384, 512) == (96, 160, 288, 352)


def _record(box, crop, size=(512, 600)) -> FaceRecord:
    return FaceRecord(box, 20.0, "detector", crop, *size)


def test_background_blur_and_blank_change_only_what_is_outside_the_grown_box(hopper):
    rec = _record((150, 100, 380, 330), (80, 60, 450, 560))
    keep = np.asarray(cut(hopper, rec, 0.1, "keep")).astype(int)
    inner = np.s_[100 - 23 - 60:330 + 23 - 60, 150 - 23 - 80:380 + 23 - 80]  # grown by 0.1, crop coords
    outside = np.ones(keep.shape[:2], bool)
    outside[inner] = False
    for background in ("blur", "blank"):
        out = np.asarray(cut(hopper, rec, 0.1, background)).astype(int)
        assert out.shape == keep.shape == (500, 370, 3)
        assert np.array_equal(out[inner], keep[inner]), background
        assert np.abs(out - keep)[outside].mean() > 5, background
    assert (np.asarray(cut(hopper, rec, 0.1, "blank"))[outside] == 128).all()


def _boxes_file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "boxes.csv"
    path.write_text("image,x0,y0,x1,y1\n" + "\n".join(lines) + "\n")
    return path


def test_boxes_file_reports_every_bad_row_with_its_line(synth_root, tmp_path):
    person = sorted(p.name for p in (synth_root / "train" / "images").iterdir() if p.name[0].isdigit())[0]
    ext = next((synth_root / "train" / "images" / person).glob("mask1.*")).suffix
    paths = {f"{person}/mask1": f"train/images/{person}/mask1{ext}",
             f"{person}/mask2": f"train/images/{person}/mask2{ext}"}
    good = f"{person}/mask1,10,12,30,40"
    path = _boxes_file(tmp_path, [good, "nobody/mask1,1,1,5,5", f"{person}/mask2,10,10,60,40",
                                  f"{person}/mask2,a,1,5,5", f"{person}/mask2,1,1,5", f"{person}/mask2,5,5,5,9",
                                  good])
    with pytest.raises(DataError) as err:
        read_boxes(path, synth_root, paths)
    text = str(err.value)
    assert "6 bad row(s)" in text
    for line, words in ((3, "unknown image 'nobody/mask1'"), (4, "outside the 48x64 photo"), (5, "must be numbers"),
                        (6, "4 fields"), (7, "empty box"), (8, "already has a box on line 2")):
        assert f"line {line}: " in text and words in text, (line, words, text)
    assert text.index("line 3:") < text.index("line 4:") < text.index("line 8:")  # in file order
    boxes, digest = read_boxes(_boxes_file(tmp_path, [good]), synth_root, paths)
    assert boxes == {f"{person}/mask1": (10.0, 12.0, 30.0, 40.0)} and len(digest) == 64
    (tmp_path / "bad.csv").write_text("img,a,b\n")
    with pytest.raises(DataError, match="line 1 must be the header image,x0,y0,x1,y1"):
        read_boxes(tmp_path / "bad.csv", synth_root, paths)


@pytest.fixture(scope="module")
def cropped(synth_root, tmp_path_factory):
    """The session's synthetic data prepared with the synth's own face boxes, some left out."""
    from tests.helpers.specs import shrunk_spec

    out = tmp_path_factory.mktemp("faces")
    truth = pd.read_csv(synth_root / "truth" / "face_boxes.csv")
    dropped = truth.iloc[::50]
    truth.drop(dropped.index).to_csv(out / "boxes.csv", index=False)
    spec = shrunk_spec(synth_root, out, f"data.face={{detector: none, boxes: {out / 'boxes.csv'}, margin: 0.2}}",
                       name="crop")
    return spec, prepare(spec, verbose=False), truth, dropped


def test_prepare_writes_the_boxes_and_the_misses(cropped, synth_root):
    spec, dataset, truth, dropped = cropped
    faces = pd.read_parquet(spec.out_dir / "faces.parquet")
    assert len(faces) == len(truth) and set(faces["split"]) == {"train", "eval"}
    assert set(faces["image_key"]) == set(truth["image"])
    assert sorted(faces["image_key"][faces["source"] == "fallback"]) == sorted(dropped["image"])
    assert (faces["source"][~faces["image_key"].isin(dropped["image"])] == "file").all()
    files = faces.set_index("image_key").loc[truth["image"]]
    same = files["source"] == "file"
    assert np.array_equal(files.loc[same, ["x0", "y0", "x1", "y1"]].to_numpy(),
                          truth.set_index("image").loc[files.index[same], ["x0", "y0", "x1", "y1"]].to_numpy())
    misses = pd.read_csv(spec.out_dir / "face_misses.csv")
    assert sorted(misses["image_key"]) == sorted(dropped["image"])
    # Crops keep the cache's aspect (64x48: 4:3) and hold the face box.
    crop_w, crop_h = files["crop_x1"] - files["crop_x0"], files["crop_y1"] - files["crop_y0"]
    inside = (files["crop_x0"] <= files["x0"]) & (files["crop_x1"] >= files["x1"]) & \
             (files["crop_y0"] <= files["y0"]) & (files["crop_y1"] >= files["y1"])
    assert inside.all()
    assert ((crop_h / crop_w).between(1.2, 1.45) | (crop_h == 64) | (crop_w == 48)).all()


def test_the_cache_holds_the_crops(cropped, make_spec):
    spec, dataset, truth, _ = cropped
    plain = load_dataset(make_spec(), verbose=False)
    assert dataset.train_cache.array_path != plain.train_cache.array_path
    rows = dataset.train_cache.rows(dataset.train["image_key"][:20])
    a, b = dataset.train_cache.open()[rows], plain.train_cache.open()[rows]
    assert a.shape == b.shape == (20, 64, 48, 3)
    assert np.abs(a.astype(int) - b).mean() > 10  # zoomed in on the face: other pixels


def test_crop_settings_change_the_cache_and_the_job_ids_and_nothing_else(make_spec, synth_root, tmp_path):
    boxes = synth_root / "truth" / "face_boxes.csv"

    def ids(*overrides):
        spec = make_spec(*overrides)
        dataset = load_dataset(spec, verbose=False)
        model = spec.models[0]
        return (dataset.train_cache.array_path,
                job_hash(spec, model, spec.train_for(model), 0, rows_hash(spec, dataset)))

    face = f"data.face={{detector: none, boxes: {boxes}, margin: 0.3}}"
    base = ids(face)
    assert ids(face, "data.decode_workers=1") == base  # not a crop setting
    copy = tmp_path / "copy.csv"
    copy.write_bytes(boxes.read_bytes())
    assert ids(f"data.face={{detector: none, boxes: {copy}, margin: 0.3}}") == base  # same content elsewhere
    for other in ("data.face.margin=0.5", "data.face.background=blur", "data.face.fallback=full"):
        changed = ids(face, other)
        assert changed[0] != base[0] and changed[1] != base[1], other
    assert ids()[1] != base[1]


def test_no_face_section_keeps_every_hash_and_job_id():
    """Computed before data.face existed: adding the field must not re-run anyone's jobs."""
    spec = Experiment.model_validate({"name": "golden", "data": {"root": "/data/competition", "cache_size": [64, 48]},
                                      "models": [{"backbone": "test_convnext"}]})
    model = spec.models[0]
    assert spec.shared_hash() == "674db06521c6fb0d"
    assert spec.spec_hash() == "b5b88b5e133cf775"
    assert job_hash(spec, model, spec.train_for(model), 1, "0123456789abcdef") == "724608383fa2da27"
    with_face = spec.model_copy(update={"data": spec.data.model_copy(update={"face": FaceSpec()})})
    assert with_face.shared_hash() == spec.shared_hash()  # the crop's effect is in the data hash


def test_face_spec_errors_name_the_field(make_spec):
    from tasks.spec.experiment import SpecError

    with pytest.raises(SpecError, match=r"data\.face\.fallback"):
        make_spec("data.face={fallback: edge}")
    with pytest.raises(SpecError, match=r"data\.face\.margn: unknown field"):
        make_spec("data.face={margn: 0.3}")


def test_synth_boxes_are_where_the_faces_were_drawn():
    size = (384, 512)
    rng = np.random.default_rng(4)
    look = make_look(rng, 1, 22)  # young: no folds beside the nose to stop the walk below
    shots = make_shots(rng, (2, 2))  # no mask: the skin shows across the face
    framing = Framing(dx=0.08, dy=-0.05, scale=1.2)
    image = np.asarray(render_person(look, shots, size, rng, framing)[0]).astype(int)
    x0, y0, x1, y1 = face_boxes(look, shots, size, framing)[0]
    assert (x0 + x1) / 2 == pytest.approx(384 * 0.58, abs=12) and (y0 + y1) / 2 == pytest.approx(512 * 0.37, abs=12)
    # On the row a third of the way below the face's centre, the skin runs from box side to box side.
    row = round((y0 + y1) / 2 + 0.33 * (y1 - y0) / 2)
    skin = np.array(look.skin) * shots[0].brightness
    is_skin = np.linalg.norm(image[row] - skin, axis=1) < 30
    start = round(x0 + 0.65 * (x1 - x0))  # right of the nose
    assert is_skin[start]
    left, right = start, start
    while is_skin[left - 1]:
        left -= 1
    while is_skin[right + 1]:
        right += 1
    assert abs(left - x0) < 0.08 * (x1 - x0) and abs(right + 1 - x1) < 0.08 * (x1 - x0), (left, right, x0, x1)


def test_synth_writes_a_box_for_every_photo(synth_root):
    boxes = pd.read_csv(synth_root / "truth" / "face_boxes.csv")
    train = {f"{p.parent.name}/{p.stem}" for p in (synth_root / "train" / "images").glob("[0-9]*/[!.]*.*")}
    evals = set(pd.read_csv(synth_root / "eval" / "info.csv")["ImageID"])
    assert set(boxes["image"]) == train | evals and boxes["image"].is_unique
    assert (boxes["x0"] < boxes["x1"]).all() and (boxes["x1"] <= 48).all() and (boxes["y1"] <= 64).all()
    assert boxes[["x0", "x1"]].mean(axis=1).std() > 1.2  # faces move from person to person (shots alone: ~0.7)


def test_report_shows_the_crops_misses_first(cropped, synth_root):
    spec, _, _, dropped = cropped
    html = faces_section(spec.out_dir, synth_root)
    assert html.count("<figure") == 48 and html.count("data:image/jpeg;base64,") == 48
    first = html.index("<figure")
    assert "(fallback)" in html[first:first + 4000] and "fallback" in html[first:first + 100]
    assert html.count("(fallback)</figcaption>") == len(dropped)
    assert f"{len(dropped)} fallback" in html
    assert faces_section(spec.out_dir.parent / "nothing", synth_root) == ""
    assert "not known" in faces_section(spec.out_dir, None)


def test_prepare_prints_the_face_counts(cropped, capsys):
    spec, dataset, truth, dropped = cropped
    prepare(spec, verbose=True)
    err = capsys.readouterr().err
    assert (f"faces: {len(truth)} photos; detector not run; {len(truth) - len(dropped)} boxes from the file; "
            f"{len(dropped)} misses took fallback=center") in err
