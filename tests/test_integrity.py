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
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
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
