"""Data integrity: damaged CSVs, odd digits, duplicate photos, fold sizes, OOF rows vs folds,
truth files and overrides are each one clear user error (or a printed warning), never a
traceback or a silent wrong result. Real files throughout: the synth fixtures' images,
real CSVs and Parquet."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator import audit, blend, report
from orchestrator import prepare as prepare_cli
from tasks.data.dataset import DataError, index_eval, index_train
from tasks.data.preparation import load_dataset
from tasks.data.relabel import apply_relabel, read_relabel_table
from tasks.logits import logits_table, read_logits, write_logits
from tests.helpers.fake_logits import fake_models, make_people, make_targets, write_experiment, write_folds
from tests.helpers.specs import shrunk_spec


def spec_for(root: Path, tmp_path: Path, *overrides: str):
    return shrunk_spec(root, tmp_path / "results", "data.cache_size=[32, 24]", *overrides)


def prepare_main(capsys, root: Path, tmp_path: Path, *overrides: str) -> tuple[int, str]:
    args = ["experiments/demo.yaml", "--set", f"data.root={root}", "--set", f"results_dir={tmp_path / 'results'}",
            "--set", "data.cache_size=[32, 24]"] + [a for o in overrides for a in ("--set", o)]
    code = prepare_cli.main(args)
    return code, capsys.readouterr().err


def assert_one_clear_error(code: int, err: str, *fragments: str) -> None:
    """Exit 2 and one `error:` message (after any progress lines), no traceback."""
    assert code == 2, err
    assert err.count("error: ") == 1 and "Traceback" not in err, err
    assert err.startswith("error: ") or "\nerror: " in err, err
    for fragment in fragments:
        assert fragment in err, err


# --- CSV files: ragged rows, empty files -----------------------------------------------------

def test_ragged_relabel_row_names_the_file_and_line(synth_root, tmp_path):
    path = tmp_path / "relabel.csv"
    path.write_text("person,field,value\n000001,gender,male\n000002,age,40\n000003,age,41,oops,again\n")
    with pytest.raises(DataError) as info:
        apply_relabel(index_train(synth_root).images, path)
    assert f"{path}: line 4 has 5 fields, expected 3" in str(info.value)


def test_one_extra_field_in_the_first_row_is_not_read_as_an_index(tmp_path):
    # pandas would take the first column as the index and shift every column silently.
    path = tmp_path / "relabel.csv"
    path.write_text("person,field,value\n000001,gender,male,extra\n000002,age,40\n")
    with pytest.raises(DataError, match=r"line 2 has 4 fields, expected 3"):
        read_relabel_table(path)


def test_empty_or_unreadable_relabel_file_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.csv: the relabel file is empty"):
        read_relabel_table(empty)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"person,field,value\n\xff\xfe\x00,age,3\n")
    with pytest.raises(DataError, match=r"binary\.csv: the relabel file is not UTF-8 text"):
        read_relabel_table(binary)
    with pytest.raises(DataError, match=r"cannot read the relabel file"):
        read_relabel_table(tmp_path)  # a folder


@pytest.mark.parametrize("content", ["ImageID,ans\n", ""], ids=["header_only", "zero_bytes"])
def test_empty_info_csv_stops_at_indexing(data_copy, tmp_path, capsys, content):
    (data_copy / "eval/info.csv").write_text(content)
    with pytest.raises(DataError, match=r"eval/info\.csv: "):
        index_eval(data_copy)
    code, err = prepare_main(capsys, data_copy, tmp_path)
    assert_one_clear_error(code, err, str(data_copy / "eval/info.csv"))
    written = [p.name for p in (tmp_path / "results").rglob("*") if p.is_file()]
    assert written in ([], [".lock"])  # nothing prepared: at most the experiment's lock


@pytest.mark.parametrize("name", ["train/train.csv", "eval/info.csv"])
def test_malformed_data_csv_names_the_file(data_copy, tmp_path, capsys, name):
    path = data_copy / name
    lines = path.read_text().splitlines()
    lines[2] += ",surplus,fields"
    path.write_text("\n".join(lines) + "\n")
    code, err = prepare_main(capsys, data_copy, tmp_path)
    assert_one_clear_error(code, err, f"{path}: line 3 has")


# --- digits: only ASCII 0-9 are ages and ids --------------------------------------------------

ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def test_other_script_digits_in_a_folder_name_are_malformed(data_copy, tmp_path):
    folders = sorted(p for p in (data_copy / "train/images").iterdir() if p.is_dir() and p.name[0] != ".")
    age_folder, id_folder = folders[0], folders[1]
    *head, age = age_folder.name.split("_")
    renamed_age = "_".join([*head, age.translate(ARABIC_INDIC)])  # e.g. 000001_male_Asian_٣٠
    pid, rest = id_folder.name.split("_", 1)
    renamed_id = f"{pid.translate(ARABIC_INDIC)}_{rest}"
    age_folder.rename(age_folder.with_name(renamed_age))
    id_folder.rename(id_folder.with_name(renamed_id))
    problems = {p.file: p.reason for p in index_train(data_copy).problems}
    for name in (renamed_age, renamed_id):
        assert problems.get(f"train/images/{name}", "").startswith("malformed profile name"), problems
    with pytest.raises(DataError) as info:
        load_dataset(spec_for(data_copy, tmp_path), verbose=False)
    assert f"train/images/{renamed_age}: malformed profile name" in str(info.value)


def test_relabel_age_in_other_script_digits_is_refused(synth_root, tmp_path):
    images = index_train(synth_root).images
    person = images["person"].iloc[0]
    path = tmp_path / "relabel.csv"
    path.write_text(f"person,field,value\n{person},age,{'61'.translate(ARABIC_INDIC)}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"relabel\.csv:2: age must be a whole number of years in digits 0-9"):
        apply_relabel(images, path)


# --- folds.n_splits against the bands -------------------------------------------------------

def test_prepare_with_more_folds_than_any_band_is_one_clear_error(synth_root, tmp_path, capsys):
    code, err = prepare_main(capsys, synth_root, tmp_path, "folds.n_splits=20")
    assert_one_clear_error(code, err, "folds.n_splits=20 is more than the people in every gender x age band",
                           "female 30-59: ")
    assert not (tmp_path / "results" / "demo" / "folds.parquet").exists()


# --- duplicate photos across people ----------------------------------------------------------

def people_folders(root: Path) -> list[Path]:
    return sorted(p for p in (root / "train/images").iterdir() if p.is_dir() and not p.name.startswith("."))


def copy_person(root: Path, folder: Path, new_id: str) -> Path:
    """A byte-identical copy of a person's folder under another id, listed in train.csv."""
    _, gender, race, age = folder.name.rsplit("_", 3)
    target = folder.with_name(f"{new_id}_{gender}_{race}_{age}")
    shutil.copytree(folder, target)
    with open(root / "train/train.csv", "a") as f:
        f.write(f"{new_id},{gender},{race},{age},{target.name}\n")
    return target


def share_photo(source: Path, target: Path, stem: str) -> None:
    """Overwrite target's photo `stem` with source's bytes (keeping target's file name)."""
    shutil.copyfile(next(source.glob(f"{stem}.*")), next(target.glob(f"{stem}.*")))


def person_folds(tmp_path: Path) -> pd.Series:
    folds = pd.read_parquet(tmp_path / "results" / "demo" / "folds.parquet")
    return folds.drop_duplicates("person").set_index("person")["fold"]


def test_a_copied_person_stops_prepare_naming_both_paths(data_copy, tmp_path, capsys):
    original = people_folders(data_copy)[0]
    copy = copy_person(data_copy, original, "999999")
    code, err = prepare_main(capsys, data_copy, tmp_path)
    assert_one_clear_error(code, err, "7 training image(s) are byte-identical to a photo of another person",
                           "--set data.on_duplicate=keep", "--set data.on_duplicate=drop")
    for file in copy.iterdir():
        if file.stem in ("mask1", "normal") and not file.name.startswith("."):
            original_file = next(original.glob(f"{file.stem}.*"))
            assert (f"train/images/{copy.name}/{file.name}: same bytes as "
                    f"train/images/{original.name}/{original_file.name}") in err, err
    assert not (tmp_path / "results" / "demo" / "folds.parquet").exists()


def test_bad_images_and_duplicates_are_reported_together(data_copy, tmp_path):
    folders = people_folders(data_copy)
    copy_person(data_copy, folders[0], "999999")
    next(folders[3].glob("mask3.*")).unlink()
    with pytest.raises(DataError) as info:
        load_dataset(spec_for(data_copy, tmp_path), verbose=False)
    text = str(info.value)
    assert f"{folders[3].name}/mask3.*: missing image" in text and "same bytes as" in text


def test_keep_holds_people_sharing_photos_in_one_fold(data_copy, tmp_path, capsys):
    folders = people_folders(data_copy)
    copy = copy_person(data_copy, folders[0], "999999")
    # a chain: folders[5] shares a photo with folders[9], which shares another with folders[14]
    share_photo(folders[5], folders[9], "mask2")
    share_photo(folders[9], folders[14], "normal")
    code, err = prepare_main(capsys, data_copy, tmp_path, "data.on_duplicate=keep")
    assert code == 0, err
    assert "data.on_duplicate=keep: kept 9 image(s) that copy a photo of another person" in err
    assert "the 5 people sharing photos form 2 group(s), each held out in one fold" in err
    fold = person_folds(tmp_path)
    assert fold[copy.name] == fold[folders[0].name]
    assert fold[folders[5].name] == fold[folders[9].name] == fold[folders[14].name]
    folds = pd.read_parquet(tmp_path / "results" / "demo" / "folds.parquet")
    assert (folds.person == copy.name).sum() == 7  # kept: every image of the copy is still there


def test_drop_leaves_out_the_later_copies_and_still_links_people(data_copy, tmp_path, capsys):
    folders = people_folders(data_copy)
    copy = copy_person(data_copy, folders[0], "999999")
    share_photo(folders[5], folders[9], "mask2")
    spec = spec_for(data_copy, tmp_path, "data.on_duplicate=drop")
    dataset = load_dataset(spec)
    err = capsys.readouterr().err
    assert "data.on_duplicate=drop: left out 8 later copies of photos another person has" in err
    assert copy.name not in set(dataset.train.person)
    assert f"{folders[9].name}/mask2" not in set(dataset.train.image_key)
    assert f"{folders[5].name}/mask2" in set(dataset.train.image_key)
    code, err = prepare_main(capsys, data_copy, tmp_path, "data.on_duplicate=drop")
    assert code == 0, err
    fold = person_folds(tmp_path)
    assert copy.name not in fold.index and fold[folders[5].name] == fold[folders[9].name]
    keep = load_dataset(spec_for(data_copy, tmp_path, "data.on_duplicate=keep"), verbose=False)
    assert keep.data_hash != dataset.data_hash  # other rows, other data


def test_without_shared_photos_on_duplicate_changes_no_hash(synth_root, tmp_path):
    stop = spec_for(synth_root, tmp_path)
    keep = spec_for(synth_root, tmp_path, "data.on_duplicate=keep")
    assert stop.shared_hash() == keep.shared_hash()
    a, b = load_dataset(stop, verbose=False), load_dataset(keep, verbose=False)
    assert a.data_hash == b.data_hash and a.linked == b.linked == ()
    assert a.train.equals(b.train)


def test_a_repeated_photo_within_one_person_is_only_mentioned(data_copy, tmp_path, capsys):
    folder = people_folders(data_copy)[2]
    shutil.copyfile(next(folder.glob("mask1.*")), next(folder.glob("mask4.*")))
    dataset = load_dataset(spec_for(data_copy, tmp_path))
    err = capsys.readouterr().err
    assert "1 image(s) repeat another photo of the same person" in err
    assert f"train/images/{folder.name}/{next(folder.glob('mask4.*')).name}: same bytes as" in err
    assert f"{folder.name}/mask4" in set(dataset.train.image_key) and dataset.linked == ()


# --- OOF rows against folds.parquet ----------------------------------------------------------

N_SPLITS = 3


def one_model_experiment(tmp_path: Path, models=("only",)) -> tuple[Path, pd.DataFrame]:
    people = make_people(45, N_SPLITS, seed=6)
    answers = make_targets(60, seed=7)
    fake = fake_models(people, answers, N_SPLITS, {m: {} for m in models})
    exp = write_experiment(tmp_path, people, fake, answers, N_SPLITS, rounds=5, decode="joint")
    write_folds(exp, people)
    return exp, people


def rewrite_oof(exp: Path, keep=None, edit=None) -> None:
    frame, logits, meta = read_logits(exp / "oof.parquet")
    mask = np.ones(len(frame), bool) if keep is None else keep(frame).to_numpy()
    frame, logits = frame[mask].reset_index(drop=True), logits[mask]
    write_logits(exp / "oof.parquet", logits_table(edit(frame) if edit else frame, logits, meta))


def cli(capsys, main, exp: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--results", str(exp), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_person_missing_from_the_only_models_oof_is_not_blended(tmp_path, capsys):
    exp, people = one_model_experiment(tmp_path)
    gone = people.person.iloc[7 * 4]
    rewrite_oof(exp, keep=lambda f: f.person != gone)
    code, out, err = cli(capsys, blend.main, exp)
    assert_one_clear_error(code, err, "no model has complete OOF and test logits")
    reason = f"OOF lacks 7 of {len(people)} images in folds.parquet (1 person, e.g. {gone}/"
    assert f"excluded model 'only': {reason}" in out and reason in err
    assert not (exp / "blend").exists()
    code, out, err = cli(capsys, audit.main, exp)
    assert_one_clear_error(code, err, "no model has complete OOF logits to audit with")
    assert f"excluded model 'only': {reason}" in out


def test_a_model_missing_rows_others_lack_too_is_excluded_by_name(tmp_path, capsys):
    exp, people = one_model_experiment(tmp_path, models=("a", "b"))
    gone = set(people.person.iloc[[0, 7 * 9]])
    rewrite_oof(exp, keep=lambda f: ~f.person.isin(gone))  # both backbones lost the same two people
    code, out, err = cli(capsys, blend.main, exp)
    assert code == 2
    for model in ("a", "b"):
        assert f"excluded model '{model}': OOF lacks 14 of {len(people)} images in folds.parquet (2 people" in out


def test_oof_folds_other_than_folds_parquet_are_one_clear_error(tmp_path, capsys):
    exp, people = one_model_experiment(tmp_path, models=("a", "b"))
    moved = people.person.iloc[0]

    def move(frame):
        frame = frame.copy()
        frame.loc[frame.person == moved, "fold"] = (frame.fold[frame.person == moved] + 1) % N_SPLITS
        return frame

    rewrite_oof(exp, edit=move)
    for main in (blend.main, audit.main, report.main):
        code, _, err = cli(capsys, main, exp)
        assert_one_clear_error(code, err, f"{exp / 'oof.parquet'}: 7 images have another fold or person than in "
                                          f"{exp / 'folds.parquet'}", "re-run `python -m orchestrator.run`")


def test_oof_images_not_in_folds_parquet_are_one_clear_error(tmp_path, capsys):
    exp, people = one_model_experiment(tmp_path)
    write_folds(exp, people[people.person != people.person.iloc[-1]])
    code, _, err = cli(capsys, blend.main, exp)
    assert_one_clear_error(code, err, f"oof.parquet: 7 images are not in {exp / 'folds.parquet'}",
                           "re-run `python -m orchestrator.run`")


# --- the --truth file --------------------------------------------------------------------------

def write_truth(tmp_path: Path, edit) -> Path:
    truth = pd.read_csv(tmp_path / "data" / "truth" / "eval_answers.csv", dtype=str)
    path = tmp_path / "truth.csv"
    edit(truth).to_csv(path, index=False)
    return path


def _set(row: int, value: str):
    def edit(truth):
        truth.loc[row, "ans"] = value
        return truth
    return edit


def _conflict(truth):
    """Row 3 again with another answer; rows 8 and 9 again alike, which is fine (not counted)."""
    other = truth.iloc[[3]].assign(ans=str((int(truth.ans[3]) + 1) % 18))
    return pd.concat([truth, truth.iloc[[8, 9]], other], ignore_index=True)


@pytest.mark.parametrize("edit, message", [
    (_set(4, "x"), r"truth\.csv: 1 answers are not a class 0\.\.17, e.g\. line 6: [0-9a-f]{40}\.jpg,x$"),
    (_set(0, "18"), r"truth\.csv: 1 answers are not a class 0\.\.17, e.g\. line 2: [0-9a-f]{40}\.jpg,18$"),
    (_set(2, "2.5"), r"e\.g\. line 4: [0-9a-f]{40}\.jpg,2\.5$"),
    (_set(2, "\u0663"), r"e\.g\. line 4: [0-9a-f]{40}\.jpg,\u0663$"),  # '٣': digits are ASCII
    (_conflict, r"truth\.csv: 1 ImageIDs have different answers, e.g\. [0-9a-f]{40}\.jpg on lines 5, 64: \d+, \d+$"),
], ids=["not_a_number", "outside_0_17", "fraction", "arabic_indic", "conflicting_duplicate"])
def test_a_bad_truth_file_stops_before_the_blend_is_fitted(tmp_path, capsys, edit, message):
    exp, _ = one_model_experiment(tmp_path)
    code, out, err = cli(capsys, blend.main, exp, "--truth", str(write_truth(tmp_path, edit)))
    assert_one_clear_error(code, err)
    assert re.search(message, err.strip()), err
    assert "blending" not in out  # nothing was fitted
    assert not (exp / "blend").exists()


# --- --set on results: only blend.*, resources.* and where the data is ----------------------------

REFUSED = [("folds.n_splits=3", "folds"), ("name=other", "name"), ("data.on_bad_image=skip", "data"),
           ("models.0.name=x", "models"), ("refit.epochs=3", "refit")]


def test_results_commands_override_only_blend_and_data_root(tmp_path, capsys):
    exp, _ = one_model_experiment(tmp_path)
    for override, section in REFUSED:
        key = override.partition("=")[0]
        for main in (blend.main, audit.main, report.main):
            code, out, err = cli(capsys, main, exp, "--set", override)
            assert_one_clear_error(code, err, f"{exp / 'spec.yaml'}: --set {key}: blend, audit and report read the "
                                              "experiment as it was run; only blend.*, resources.*, tracking.*, "
                                              "refit.combine, refit.models and data.root, data.cache_dir, "
                                              "data.decode_workers can be overridden (run a new experiment to "
                                              f"change {section})")
            assert "re-run the failed jobs" not in err
    assert not (exp / "blend").exists()
    # What may change: the blend (also through --metric) and where the data now lives.
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "data", moved)
    code, out, err = cli(capsys, blend.main, exp, "--metric", "accuracy", "--set", "blend.rounds=3",
                         "--set", f"data.root={moved}", "--set", "data.decode_workers=1")
    assert code == 0, err
    assert "metric accuracy" in out and (exp / "blend" / "submission.csv").exists()


def test_blend_with_a_ragged_info_csv_names_the_line(tmp_path, capsys):
    exp, _ = one_model_experiment(tmp_path)
    info = tmp_path / "data" / "eval" / "info.csv"
    lines = info.read_text().splitlines()
    lines[5] += ",0"
    info.write_text("\n".join(lines) + "\n")
    code, _, err = cli(capsys, blend.main, exp)
    assert_one_clear_error(code, err, f"{info}: line 6 has 3 fields, expected 2")
