"""`python -m orchestrator.export` and `predict --exported`: the ensemble on onnxruntime alone."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel

from orchestrator import export, predict
from tasks.predict.onnx_export import ExportError, check_tta_exportable
from tests.helpers.specs import REPO

PROBS = [f"prob_{c}" for c in range(18)]


@pytest.fixture(scope="module")
def exported(blended_experiment, synth_root, tmp_path_factory):
    """The session's experiment exported, and both paths' predictions of its eval photos."""
    tmp = tmp_path_factory.mktemp("export")
    assert export.main(["--results", str(blended_experiment), "--out", str(tmp / "exported")]) == 0
    photos = str(synth_root / "eval" / "images")
    assert predict.main([photos, "--results", str(blended_experiment), "--out", str(tmp / "torch.csv"), "--probs"]) == 0
    assert predict.main([photos, "--exported", str(tmp / "exported"), "--out", str(tmp / "onnx.csv"), "--probs"]) == 0
    return tmp / "exported", pd.read_csv(tmp / "torch.csv"), pd.read_csv(tmp / "onnx.csv")


@pytest.mark.slow  # trains the session's experiment and exports it
def test_the_export_is_a_self_contained_folder(exported, blended_experiment):
    folder, _, _ = exported
    record = json.loads((folder / "blend.json").read_text())
    weights = json.loads((blended_experiment / "blend" / "weights.json").read_text())
    assert record["blend"]["method"] == weights["method"] and record["blend"]["weights"] == weights["weights"]
    assert record["blend"]["temperatures"] == weights["temperatures"] and record["blend"]["offsets"] == weights["offsets"]
    members = record["members"]
    assert sorted(m["fold"] for m in members) == [0, 1] and {m["model"] for m in members} == {"effnet_multi"}
    assert all((folder / m["file"]).stat().st_size > 10_000 and m["max_logit_difference"] < 1e-4 for m in members)
    assert members[0]["input"] == {"input_size": [64, 48], "eval_pipeline": [], "tta_flip": True}
    assert record["decodings"] == [{"cache_size": [64, 48], "face": None}]
    assert "--exported" in (folder / "README.md").read_text()


@pytest.mark.slow  # trains the session's experiment and exports it
def test_exported_predictions_equal_torchs_within_1e_4(exported):
    _, torch_table, onnx_table = exported
    assert torch_table["path"].tolist() == onnx_table["path"].tolist() and len(onnx_table) > 100
    difference = np.abs(torch_table[PROBS].to_numpy() - onnx_table[PROBS].to_numpy()).max()
    assert difference < 1e-4, difference
    assert (torch_table["class"] == onnx_table["class"]).all()


@pytest.mark.slow  # trains the session's experiment and exports it
def test_predict_exported_imports_no_torch_timm_or_ray(exported, synth_root, tmp_path):
    folder, _, onnx_table = exported
    photos = sorted((synth_root / "eval" / "images").iterdir())[:12]
    code = (f"import sys\nfrom orchestrator import predict\n"
            f"code = predict.main({[str(p) for p in photos]!r} + ['--exported', {str(folder)!r}, '--out', "
            f"{str(tmp_path / 'p.csv')!r}])\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'timm', 'ray', 'torchvision'})\n"
            "print(code, heavy)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stdout
    table = pd.read_csv(tmp_path / "p.csv")
    assert table["class"].tolist() == onnx_table.set_index("path").loc[table["path"], "class"].tolist()


def test_a_tta_the_exported_runner_does_not_apply_is_refused():
    class Train(BaseModel):
        tta_flip: bool = True
        tta_views: list[str] = []

    check_tta_exportable(Train(), "m/fold0")  # flip alone: exported as it is
    with pytest.raises(ExportError, match=r"m/fold0: train\.tta_views is set, but the exported runner applies only"):
        check_tta_exportable(Train(tta_views=["rot90"]), "m/fold0")


def test_predict_exported_on_a_folder_that_is_no_export_is_one_line(tmp_path, synth_root, capsys):
    photo = next((synth_root / "eval" / "images").iterdir())
    assert predict.main([str(photo), "--exported", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path}: not an exported ensemble (no blend.json)") and err.count("\n") == 1
