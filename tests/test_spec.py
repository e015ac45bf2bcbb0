"""The experiment spec: validation errors name the file and field; overrides validate the same."""
from pathlib import Path

import pytest
import yaml

from tasks.spec.experiment import Experiment, SpecError
from tasks.spec.load import load_spec


def make_data_root(root: Path) -> Path:
    for d in ("train/images", "eval/images"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "train/train.csv").write_text("id,gender,race,age,path\n")
    (root / "eval/info.csv").write_text("ImageID,ans\n")
    return root


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    root = make_data_root(tmp_path / "data")
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"root": str(root)},
        "models": [{"backbone": "test_resnet"},
                   {"backbone": "test_efficientnet", "train": {"epochs": 3, "optimizer": {"lr": 0.01}}}],
    }))
    return path


def error_of(path: Path, *overrides: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path, list(overrides))
    return str(info.value)


def test_defaults_name_and_per_model_merge(spec_file):
    spec = load_spec(spec_file)
    assert spec.name == "trial"  # the YAML file's stem
    assert spec.out_dir == Path("results/trial")
    assert [m.name for m in spec.models] == ["test_resnet", "test_efficientnet"]
    merged = spec.train_for(spec.models[1])
    assert (merged.epochs, merged.optimizer.lr) == (3, 0.01)
    assert merged.batch_size == spec.train.batch_size  # untouched fields come from `train`
    assert spec.train_for(spec.models[0]).epochs == spec.train.epochs


def test_overrides_go_through_validation(spec_file, tmp_path):
    other = make_data_root(tmp_path / "elsewhere")
    spec = load_spec(spec_file, [f"data.root={other}", "name=trial2", "train.batch_size=8",
                                 "models.1.train.optimizer.lr=0.5", "train.input_size=[64, 48]"])
    assert spec.name == "trial2" and spec.data.root == other
    assert spec.train.batch_size == 8 and spec.train.input_size == (64, 48)
    assert spec.train_for(spec.models[1]).optimizer.lr == 0.5
    assert "train.batch_size: Input should be a valid integer" in error_of(spec_file, "train.batch_size=lots")


@pytest.mark.parametrize("override, expected", [
    ("train.bach_size=3", "train.bach_size: unknown field (typo?)"),
    ("models.1.train.optimizer.lr=-1", "models.1.train.optimizer.lr: Input should be greater than 0"),
    ("models.0.backbone=resnet_9000", "models.0.backbone: unknown timm backbone 'resnet_9000'"),
    ("train.loss=[{name: cee}]", "train.loss.0.name: Input should be 'ce'"),
    ("train.augment.train=[{name: Blurr}]", "'Blurr' is not an albumentations transform"),
    ("train.augment.train=[{name: Blur, foo: 1}]", "step 0 (Blur): unknown parameter(s) ['foo']"),
    ("train.age_borders=[60, 30]", "train.age_borders: borders must increase"),
    ("models.5.backbone=x", "--set: models.5: list index must be 0..1"),
    ("name=bad/name", "name: 'bad/name' is not a usable name"),
])
def test_bad_values_name_the_field(spec_file, override, expected):
    message = error_of(spec_file, override)
    assert message.startswith(f"{spec_file}: ")
    assert expected in message


def test_duplicate_model_names_rejected(spec_file):
    message = error_of(spec_file, "models.1.backbone=test_resnet", "models.1.train={}")
    assert "duplicate names ['test_resnet']" in message


def test_missing_data_root_says_where_and_how(spec_file, tmp_path):
    message = error_of(spec_file, f"data.root={tmp_path / 'nowhere'}")
    assert "data.root:" in message and "train/images" in message
    assert "--set data.root=" in message and "demo" in message


def test_yaml_problems_are_spec_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    assert "not valid YAML" in error_of(bad)
    bad.write_text("- just a list")
    assert "top level must be a mapping" in error_of(bad)
    assert "no such experiment file" in error_of(tmp_path / "missing.yaml")


@pytest.mark.parametrize("value, fragment", [
    ("[1", "--set: name=[1: the value '[1' is not valid YAML (line 1, column 3)"),
    ("!!python/object/apply:os.system ['touch PWNED']",
     "carries the YAML tag !!python/object/apply:os.system, which is never read"),
], ids=["unclosed", "python_tag"])
def test_a_set_value_that_is_not_plain_yaml_is_one_line_and_runs_nothing(spec_file, tmp_path, monkeypatch, capsys,
                                                                          value, fragment):
    from orchestrator import run

    monkeypatch.chdir(tmp_path)
    assert fragment in error_of(spec_file, f"name={value}")
    assert run.main([str(spec_file), "--set", f"name={value}", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err
    assert not (tmp_path / "PWNED").exists()


def test_a_spec_path_that_is_no_text_file_is_one_line(tmp_path, capsys):
    from orchestrator import run

    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    for path, fragment in ((tmp_path, "the experiment file is a folder, not a file; give the path of an "
                                      "experiment YAML"), (binary, "the experiment file is not UTF-8 text")):
        assert fragment in error_of(path)
        assert run.main([str(path), "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}: ") and fragment in err and err.count("\n") == 1, err


def test_hashes_follow_content_not_name(spec_file):
    a = load_spec(spec_file)
    b = load_spec(spec_file, ["name=other"])
    c = load_spec(spec_file, ["models.0.train.epochs=7"])
    assert a.spec_hash() == b.spec_hash() != c.spec_hash()
    assert a.shared_hash() == c.shared_hash()  # model settings do not change comparability
    assert a.shared_hash() != load_spec(spec_file, ["folds.seed=1"]).shared_hash()


@pytest.mark.parametrize("name", ["demo", "five_fold"])
def test_shipped_experiments_validate(name):
    spec = load_spec(Path("experiments") / f"{name}.yaml", check_data=False)
    assert isinstance(spec, Experiment) and spec.name == name
