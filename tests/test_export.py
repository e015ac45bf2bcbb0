"""`python -m orchestrator.export` and `predict --exported`: the ensemble on onnxruntime alone."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel

from orchestrator import export, predict
from tasks.serving.onnx_export import ExportError, check_tta_exportable
from tests.helpers.specs import REPO

PROBS = [f"prob_{c}" for c in range(18)]


@pytest.mark.slow  # trains the session's experiment and exports it
def test_the_export_answers_as_torch_within_1e_4_without_importing_torch(blended_experiment, synth_root, tmp_path):
    folder, photos = tmp_path / "exported", str(synth_root / "eval" / "images")
    assert export.main(["--results", str(blended_experiment), "--out", str(folder)]) == 0
    record = json.loads((folder / "blend.json").read_text())
    weights = json.loads((blended_experiment / "blend" / "weights.json").read_text())
    assert {k: record["blend"][k] for k in ("method", "weights", "temperatures", "offsets")} == {
        k: weights[k] for k in ("method", "weights", "temperatures", "offsets")}
    members = record["members"]
    assert sorted(m["fold"] for m in members) == [0, 1] and {m["model"] for m in members} == {"effnet_multi"}
    assert all((folder / m["file"]).stat().st_size > 10_000 and m["max_logit_difference"] < 1e-4 for m in members)
    assert members[0]["input"] == {"input_size": [64, 48], "eval_pipeline": [], "tta_flip": True}
    assert record["decodings"] == [{"cache_size": [64, 48], "face": None}]
    assert "--exported" in (folder / "README.md").read_text()

    assert predict.main([photos, "--results", str(blended_experiment), "--out", str(tmp_path / "torch.csv"),
                         "--probs"]) == 0
    code = (f"import sys\nfrom orchestrator import predict\n"
            f"code = predict.main([{photos!r}, '--exported', {str(folder)!r}, '--out', {str(tmp_path / 'onnx.csv')!r}, "
            "'--probs'])\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'timm', 'ray', 'torchvision'})\n"
            "print(code, heavy)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stdout  # ran, and imported none of them
    torch_table, onnx_table = pd.read_csv(tmp_path / "torch.csv"), pd.read_csv(tmp_path / "onnx.csv")
    assert torch_table["path"].tolist() == onnx_table["path"].tolist() and len(onnx_table) > 100
    difference = np.abs(torch_table[PROBS].to_numpy() - onnx_table[PROBS].to_numpy()).max()
    assert difference < 1e-4, difference
    assert (torch_table["class"] == onnx_table["class"]).all()


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
