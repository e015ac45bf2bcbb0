"""tasks.synth: layout and quirks of the real archive, determinism, labels, learnability."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, UnidentifiedImageError

from tasks.labels import GENDER_NAMES, MASK_STEMS, age_band, class_of, mask_of_stem
from tasks.synth import write as synth
from tasks.synth.write import SynthError, SynthSummary, main, parse_size, write_synth
from tests.helpers.specs import REPO

FOLDER = re.compile(r"^(\d{6}(?:-1)?)_(male|female)_Asian_(\d{2})$")


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> tuple[Path, SynthSummary]:
    out = tmp_path_factory.mktemp("synth") / "ds"
    # rate 0.05 of 60 -> 3 mislabeled people: 2 gender flips and 1 file swap
    return out, write_synth(out, 60, seed=7, size=(48, 64), eval_persons=20,
                            mislabel_rate=0.05, workers=1)


def _folders(out: Path) -> list[Path]:
    return sorted(p for p in (out / "train" / "images").iterdir()
                  if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def test_folders_hold_the_seven_stems(ds):
    out, summary = ds
    folders = _folders(out)
    assert len(folders) == summary.train_people == 60
    for folder in folders:
        assert FOLDER.match(folder.name), folder.name
        assert sorted(p.stem for p in _images(folder)) == sorted(MASK_STEMS), folder.name
    assert summary.train_images == sum(len(_images(f)) for f in folders) == 420


def test_extension_mix_and_real_formats(ds):
    out, _ = ds
    kinds = Counter()
    for folder in _folders(out):
        exts = Counter(p.suffix for p in _images(folder))
        kinds["mixed" if len(exts) > 1 else next(iter(exts))] += 1
        if len(exts) > 1:
            assert exts == {".jpeg": 6, ".jpg": 1}
    assert kinds[".png"] >= 1 and kinds[".jpeg"] >= 1 and kinds["mixed"] >= 1
    assert kinds[".jpg"] > 0.8 * 60
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
    for path in (out / "train" / "images").glob("*/[!.]*.*"):
        with Image.open(path) as img:
            assert (img.format, img.size, img.mode) == (formats[path.suffix], (48, 64), "RGB")


def test_macos_junk_and_hidden_folders(ds):
    out, summary = ds
    images = out / "train" / "images"
    junk = list(images.glob("*/._*")) + list(images.glob("._*"))
    assert len(junk) == summary.junk_files >= 2
    assert any(p.parent == images and p.is_file() for p in junk)  # ._<profile>
    for p in junk:
        assert p.read_bytes().startswith(b"\x00\x05\x16\x07")
        with pytest.raises(UnidentifiedImageError):
            Image.open(p)
    # every ._ file shadows a real image or folder
    assert all((p.parent / p.name[2:]).exists() for p in junk)
    hidden = [p for p in images.rglob(".ipynb_checkpoints") if p.is_dir()]
    assert hidden and any(p.parent != images for p in hidden)


def test_suffixed_and_repeated_ids(ds):
    out, summary = ds
    ids = [FOLDER.match(f.name).groups() for f in _folders(out)]
    assert [i for i, _, _ in ids if i.endswith("-1")] != []
    assert sum(i.endswith("-1") for i, _, _ in ids) == 1
    by_id = Counter(i for i, _, _ in ids)
    repeated = [i for i, n in by_id.items() if n > 1]
    assert len(repeated) == 1 and by_id[repeated[0]] == 2
    assert sorted(int(a) for i, _, a in ids if i == repeated[0]) == [19, 20]
    assert summary.train_folders == 60


def test_train_csv_matches_folders(ds):
    out, _ = ds
    csv = pd.read_csv(out / "train" / "train.csv", dtype=str)
    assert list(csv.columns) == ["id", "gender", "race", "age", "path"]
    assert sorted(csv["path"]) == [f.name for f in _folders(out)]
    assert (csv["race"] == "Asian").all()
    for row in csv.itertuples():
        assert FOLDER.match(row.path).groups() == (row.id, row.gender, row.age)
    assert csv["id"].str.fullmatch(r"\d{6}(-1)?").all()  # leading zeros kept


def test_eval_layout_and_truth_order(ds):
    out, summary = ds
    info = pd.read_csv(out / "eval" / "info.csv")
    assert list(info.columns) == ["ImageID", "ans"]
    assert len(info) == summary.eval_images == 20 * 7
    assert info["ImageID"].str.fullmatch(r"[0-9a-f]{40}\.jpg").all()
    assert (info["ans"] == 0).all() and info["ImageID"].is_unique
    assert set(info["ImageID"]) == {p.name for p in (out / "eval" / "images").iterdir()}
    answers = pd.read_csv(out / "truth" / "eval_answers.csv")
    persons = pd.read_csv(out / "truth" / "eval_persons.csv", dtype={"person": str})
    assert list(persons.columns) == ["ImageID", "person", "gender", "age", "mask"]
    assert list(answers["ImageID"]) == list(info["ImageID"]) == list(persons["ImageID"])
    gender = persons["gender"].map(GENDER_NAMES.index)
    mask = persons["mask"].map(("wear", "incorrect", "not_worn").index)
    assert (answers["ans"] == class_of(mask, gender, age_band(persons["age"]))).all()
    per_person = [Counter(m) for _, m in persons.groupby("person")["mask"]]
    assert len(per_person) == 20
    assert all(c == {"wear": 5, "incorrect": 1, "not_worn": 1} for c in per_person)
    # shuffled: a person's photos are not adjacent rows
    assert (persons["person"] != persons["person"].shift()).mean() > 0.7
    assert not set(persons["person"]) & {FOLDER.match(f.name)[1] for f in _folders(out)}


def test_mislabeled_rows_correct_the_folder_names(ds):
    out, summary = ds
    fixes = pd.read_csv(out / "truth" / "mislabeled.csv", dtype=str)
    truth = pd.read_csv(out / "truth" / "train_persons.csv").set_index("path")
    assert list(fixes.columns) == ["person", "field", "value"]
    assert set(fixes["person"]) <= {f.name for f in _folders(out)}
    gender = fixes[fixes["field"] == "gender"]
    assert len(gender) == summary.gender_flips == 2
    for row in gender.itertuples():
        assert FOLDER.match(row.person)[2] != row.value == truth.loc[row.person, "gender"]
    listed = truth.index.str.extract(FOLDER)[1].to_numpy()
    assert set(truth.index[listed != truth["gender"].to_numpy()]) == set(gender["person"])
    swaps = fixes[fixes["field"] != "gender"].sort_values("field")
    assert summary.swaps == 1 and len(swaps) == 2
    assert list(zip(swaps["field"], swaps["value"])) == [("incorrect_mask", "not_worn"),
                                                         ("normal", "incorrect")]
    assert set(swaps["person"]) == set(truth.index[truth["swapped"] == 1])


def test_swapped_person_draws_the_masks_the_other_way():
    person = synth.Person(0, "000001", 0, 30, 0, True, (".jpg",) * 7)
    assert synth._drawn_masks(person) == (0, 0, 0, 0, 0, 2, 1)
    assert synth._drawn_masks(person.__class__(0, "1", 0, 30, 0, False, ())) == (
        0, 0, 0, 0, 0, 1, 2)


def test_same_seed_same_bytes_other_seed_differs(ds, tmp_path):
    out, _ = ds
    again = tmp_path / "again"
    write_synth(again, 60, seed=7, size=(48, 64), eval_persons=20, mislabel_rate=0.05, workers=1)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in files)
    other = tmp_path / "other"
    write_synth(other, 60, seed=8, size=(48, 64), eval_persons=20, mislabel_rate=0.05, workers=1)
    assert (other / "train" / "train.csv").read_bytes() != (out / "train" / "train.csv").read_bytes()
    a = sorted((out / "train" / "images").glob("*/normal.jpg"))[0].read_bytes()
    b = sorted((other / "train" / "images").glob("*/normal.jpg"))[0].read_bytes()
    assert a != b


def test_worker_pool_gives_the_same_bytes(tmp_path, monkeypatch):
    write_synth(tmp_path / "one", 8, seed=3, size=(32, 40), eval_persons=2, workers=1)
    monkeypatch.setattr(synth, "POOL_MIN_PIXELS", 0)
    write_synth(tmp_path / "two", 8, seed=3, size=(32, 40), eval_persons=2, workers=2)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*")
                   if p.is_file())
    assert len(files) > 70
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f


def test_people_follow_the_real_proportions():
    people = synth._train_people(np.random.default_rng(0), 300, 0.02)
    gender = np.array([p.gender for p in people])
    ages = np.array([p.age for p in people])
    assert abs(gender.mean() - 1658 / 2700) < 0.02
    assert ages.min() >= 18 and ages.max() == 60
    for g, shares in ((0, (549, 410, 83)), (1, (732, 817, 109))):
        band = np.bincount(age_band(ages[gender == g]), minlength=3) / (gender == g).sum()
        assert np.allclose(band, np.array(shares) / sum(shares), atol=0.03), (g, band)
    assert abs((ages >= 57).mean() - 542 / 2700) < 0.06
    assert 0.25 < (ages < 25).mean() < 0.45  # young people spread, not piled at 29
    assert len({p.age for p in people if 30 <= p.age < 60}) > 20
    exts = Counter(p.exts[0] for p in people)
    assert exts[".jpg"] > 0.85 * 300 and exts[".png"] >= 1 and exts[".jpeg"] >= 1
    assert sum(p.listed_gender != p.gender for p in people) + sum(p.swapped for p in people) == 6


def _mask_features(path: Path, box) -> np.ndarray:
    """Colour differences between coarse cells from forehead to chin: mask-colour blind.

    The cells are placed on the face box of truth/face_boxes.csv (the faces move and scale
    from person to person), from a fifth of the box down to a fifth below its bottom."""
    a = np.asarray(Image.open(path).convert("RGB"), np.float32)
    x0, y0, x1, y1 = box
    ys = np.clip(np.linspace(y0 + 0.2 * (y1 - y0), y0 + 1.2 * (y1 - y0), 7), 0, a.shape[0]).astype(int)
    xs = np.linspace(x0 + 0.06 * (x1 - x0), x0 + 0.94 * (x1 - x0), 4).astype(int)
    cells = np.array([a[ys[i]:max(ys[i + 1], ys[i] + 1), xs[j]:xs[j + 1]].reshape(-1, 3).mean(0)
                      for i in range(6) for j in range(3)])
    dist = np.linalg.norm(cells[:, None] - cells[None], axis=2)
    return dist[np.triu_indices(len(cells), 1)] / 255


def _ridge_balanced_accuracy(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> float:
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    z = np.c_[(x - mu) / sd, np.ones(len(x))]
    weight = (1 / np.bincount(y[train]))[y[train]][:, None]
    a = z[train]
    coef = np.linalg.solve(a.T @ (a * weight) + np.eye(a.shape[1]), a.T @ (np.eye(3)[y[train]] * weight))
    pred = (z[~train] @ coef).argmax(1)
    return float(np.mean([np.mean(pred[y[~train] == c] == c) for c in range(3)]))


def test_mask_state_is_learnable_across_people(ds):
    out, _ = ds
    truth = pd.read_csv(out / "truth" / "train_persons.csv")
    boxes = pd.read_csv(out / "truth" / "face_boxes.csv").set_index("image")
    x, y, person = [], [], []
    for k, row in enumerate(truth[truth["swapped"] == 0].itertuples()):
        for path in _images(out / "train" / "images" / row.path):
            x.append(_mask_features(path, boxes.loc[f"{row.path}/{path.stem}", ["x0", "y0", "x1", "y1"]]))
            y.append(mask_of_stem(path.stem))
            person.append(k)
    train = np.array(person) % 3 != 0  # held-out people, not held-out photos
    assert _ridge_balanced_accuracy(np.array(x), np.array(y), train) > 0.6  # chance 1/3


def test_person_leak_inflates_a_nearest_neighbour(ds):
    out, _ = ds
    truth = pd.read_csv(out / "truth" / "train_persons.csv")
    x, gender, person = [], [], []
    for k, row in enumerate(truth.itertuples()):
        for path in _images(out / "train" / "images" / row.path):
            img = Image.open(path).convert("RGB").resize((12, 16))
            x.append(np.asarray(img, np.float32).ravel() / 255)
            gender.append(row.gender)
            person.append(k)
    x, gender, person = np.array(x), np.array(gender), np.array(person)

    def nn_accuracy(test: np.ndarray) -> float:
        d = ((x[test][:, None] - x[~test][None]) ** 2).sum(2)
        return float(np.mean(gender[~test][d.argmin(1)] == gender[test]))

    rng = np.random.default_rng(0)
    leaky = nn_accuracy(rng.random(len(x)) < 1 / 3)
    by_person = nn_accuracy(np.isin(person, rng.permutation(60)[:20]))
    assert leaky > 0.9 and leaky - by_person > 0.15


def test_parse_size():
    assert parse_size("384x512") == (384, 512)
    for bad in ("48", "48x", "x64", "48*64", "-4x8", "4x8x2"):
        with pytest.raises(argparse.ArgumentTypeError, match="48x64"):
            parse_size(bad)


def test_cli_rejects_bad_size(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "o"), "--size", "48by64"])
    assert exc.value.code != 0 and "48x64" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_argument_checks(tmp_path):
    with pytest.raises(SynthError, match="at least"):
        write_synth(tmp_path / "o", 3, seed=0, size=(48, 64))
    with pytest.raises(SynthError, match="mislabel"):
        write_synth(tmp_path / "o", 10, seed=0, size=(48, 64), mislabel_rate=0.9)
    with pytest.raises(SynthError, match="size"):
        write_synth(tmp_path / "o", 10, seed=0, size=(8, 64))
    assert not (tmp_path / "o").exists()


def test_existing_output_is_never_destroyed(tmp_path, capsys):
    real = tmp_path / "real"
    (real / "train" / "images").mkdir(parents=True)
    (real / "train" / "train.csv").write_text("precious\n")
    for extra in ([], ["--overwrite"]):  # no marker: refused even with --overwrite
        with pytest.raises(SystemExit) as exc:
            main([str(real), "--persons", "8", *extra])
        assert exc.value.code != 0
        assert "refusing" in capsys.readouterr().err or not extra
    assert (real / "train" / "train.csv").read_text() == "precious\n"


def test_overwrite_replaces_an_earlier_synthetic_dataset(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main([str(out), "--persons", "10", "--eval-persons", "3", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "10 people" in printed and "70 images" in printed
    with pytest.raises(SystemExit):
        main([str(out), "--persons", "8"])
    assert len(_folders(out)) == 10  # untouched by the refused run
    assert main([str(out), "--persons", "8", "--eval-persons", "0", "--overwrite"]) == 0
    assert len(_folders(out)) == 8 and not list((out / "eval" / "images").iterdir())


def test_module_runs_from_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tasks.synth", str(tmp_path / "o"), "--persons",
                           "8", "--eval-persons", "2", "--size", "32x40"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "8 people" in done.stdout and (tmp_path / "o" / "train" / "train.csv").is_file()
