"""Indexing the competition layout: quirks skipped, people keyed by folder, problems listed."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.data.dataset import PROFILE, DataError, index_eval, index_train
from tasks.data.preparation import load_dataset
from tasks.data.relabel import apply_relabel
from tasks.labels import MASK_STEMS, age_band, class_of, mask_of_stem
from tests.helpers.specs import shrunk_spec


def spec_for(root: Path, tmp_path: Path, *overrides: str):
    return shrunk_spec(root, tmp_path / "results", "data.cache_size=[32, 24]", *overrides)


def test_index_follows_the_real_layout(synth_root):
    indexed = index_train(synth_root)
    images = indexed.images
    assert indexed.problems == []
    folders = [p.name for p in (synth_root / "train/images").iterdir() if not p.name.startswith(".")]
    assert sorted(images["person"].unique()) == sorted(folders)
    assert len(images) == 7 * len(folders)
    assert set(images["stem"]) == set(MASK_STEMS)
    # junk like ._mask1.jpg and .ipynb_checkpoints never becomes an image
    assert not images["path"].str.contains("/\\.").any()
    assert {Path(p).suffix for p in images["path"]} == {".jpg", ".jpeg", ".png"}
    # ids repeat and carry suffixes: the person key is the folder, not the id
    assert images.drop_duplicates("person")["id"].duplicated().any()
    assert images["id"].str.contains("-").any()
    row = images.iloc[0]
    match = PROFILE.match(row["person"])
    assert row["image_key"] == f"{row['person']}/{row['stem']}"
    assert row["gender"] == (0 if match["gender"] == "male" else 1) and row["age"] == int(match["age"])
    expected = class_of(images["mask"], images["gender"], age_band(images["age"]))
    assert np.array_equal(images["label"], expected)
    assert images.loc[images["stem"] == "normal", "mask"].eq(2).all()


def test_labels_scheme():
    assert [mask_of_stem(s) for s in MASK_STEMS] == [0, 0, 0, 0, 0, 1, 2]
    assert list(age_band(np.array([18, 29, 30, 59, 60]))) == [0, 0, 1, 1, 2]
    assert list(age_band(np.array([57, 58]), (30, 58))) == [1, 2]
    assert class_of(2, 1, 2) == 17 and class_of(0, 0, 0) == 0 and class_of(1, 0, 1) == 7


def test_eval_keeps_info_csv_order(synth_root):
    info = pd.read_csv(synth_root / "eval/info.csv")
    frame = index_eval(synth_root).images
    assert list(frame["image_key"]) == list(info["ImageID"])
    assert frame["path"].map(lambda p: (synth_root / p).exists()).all()


def test_relabel_file_applies_and_reports(synth_root, tmp_path):
    images = index_train(synth_root).images
    truth = pd.read_csv(synth_root / "truth/mislabeled.csv")
    fixed, summary = apply_relabel(images, synth_root / "truth/mislabeled.csv")
    assert summary.rows == len(truth) and summary.changed_images > 0
    for person, field, value in truth.itertuples(index=False):
        rows = fixed[fixed["person"] == person]
        if field == "gender":
            assert (rows["gender"] == ["male", "female"].index(value)).all()
            assert not (images.loc[images["person"] == person, "gender"] == rows["gender"]).any()
        else:
            mask = rows.loc[rows["stem"] == field, "mask"].item()
            assert mask == ["wear", "incorrect", "not_worn"].index(value)
    assert np.array_equal(fixed["label"], class_of(fixed["mask"], fixed["gender"], age_band(fixed["age"])))


def test_relabel_by_unique_id_and_errors(synth_root, tmp_path):
    images = index_train(synth_root).images
    people = images.drop_duplicates("person")
    unique_id = people[~people["id"].duplicated(keep=False)].iloc[0]
    repeated = people[people["id"].duplicated()]["id"].iloc[0]
    good = tmp_path / "good.csv"
    good.write_text(f"person,field,value\n{unique_id['id']},age,61\n")
    fixed, _ = apply_relabel(images, good)
    assert (fixed.loc[fixed["person"] == unique_id["person"], "label"] % 3 == 2).all()
    bad = tmp_path / "bad.csv"
    bad.write_text(f"person,field,value\n# a note: line numbers still count it,,\nnobody,gender,male\n{repeated},gender,male\n"
                   f"{unique_id['person']},hair,grey\n{unique_id['person']},normal,sideways\n")
    with pytest.raises(DataError) as info:
        apply_relabel(images, bad)
    text = str(info.value)
    assert "bad.csv:3: unknown person 'nobody'" in text
    assert f"bad.csv:4: id '{repeated}' names several folders" in text
    assert "bad.csv:5: unknown field 'hair'" in text
    assert "bad.csv:6: normal must be a mask state" in text


def break_data(root: Path) -> dict[str, str]:
    """Four kinds of damage at once; returns a fragment of each expected message."""
    folders = sorted(p for p in (root / "train/images").iterdir() if not p.name.startswith("."))
    missing = next(folders[0].glob("mask3.*"))
    missing.unlink()
    truncated = next(folders[1].glob("normal.*"))
    truncated.write_bytes(truncated.read_bytes()[:60])
    folders[2].rename(folders[2].with_name("not-a-profile"))
    with open(root / "train/train.csv", "a") as f:
        f.write("999999,male,Asian,30,999999_male_Asian_30\n")
    return {"missing": f"{folders[0].name}/mask3.*: missing image",
            "truncated": f"{truncated.relative_to(root)}: unreadable image",
            "malformed": "not-a-profile: malformed profile name",
            "csv": "folder '999999_male_Asian_30' not found"}


def test_all_problems_reported_at_once(data_copy, tmp_path):
    expected = break_data(data_copy)
    with pytest.raises(DataError) as info:
        load_dataset(spec_for(data_copy, tmp_path), verbose=False)
    text = str(info.value)
    for fragment in expected.values():
        assert fragment in text
    assert "data.on_bad_image=skip" in text


def test_skip_leaves_bad_images_out(data_copy, tmp_path, capsys):
    break_data(data_copy)
    dataset = load_dataset(spec_for(data_copy, tmp_path, "data.on_bad_image=skip"))
    clean = index_train(data_copy).images
    assert len(dataset.train) == len(clean) - 1  # the truncated image
    assert "not-a-profile" not in set(dataset.train["person"])
    # the renamed folder is also a train.csv row without its folder: five in all
    assert "leaving out 5 problem(s)" in capsys.readouterr().err
