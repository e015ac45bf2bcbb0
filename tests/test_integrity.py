"""Data integrity: damaged CSVs, odd digits, duplicate photos, fold sizes, OOF rows vs folds,
truth files and overrides are each one clear user error (or a printed warning), never a
traceback or a silent wrong result. Real files throughout: the synth fixtures' images,
real CSVs and Parquet."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from orchestrator import prepare as prepare_cli
from tasks.dataset import DataError, index_eval, index_train
from tasks.prepare import load_dataset
from tasks.relabel import apply_relabel, read_relabel_table
from tasks.spec import load_spec


def spec_for(root: Path, tmp_path: Path, *overrides: str):
    return load_spec(Path("experiments/demo.yaml"), [f"data.root={root}", f"results_dir={tmp_path / 'results'}",
                                                     "data.cache_size=[32, 24]", *overrides])


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
    assert not (tmp_path / "results").exists()


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
