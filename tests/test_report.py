"""The blend report: one self-contained page whose tables agree with the blend's outputs."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from orchestrator import blend, report
from orchestrator.analysis import report as reporting
from orchestrator.analysis.results import OofLogits
from tests.fake_logits import fake_models, make_people, make_targets, model_logits, write_experiment

N_SPLITS = 3
MODELS = {"wide": {}, "narrow": {"strength": (2.0, 1.5, 2.0)}, "blind": {"strength": (0.0, 0.0, 0.0)}}


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    people = make_people(90, N_SPLITS, seed=6)
    answers = make_targets(60, seed=7)
    models = fake_models(people, answers, N_SPLITS, MODELS)
    exp = write_experiment(tmp, people, models, answers, N_SPLITS, rounds=10)
    assert blend.main(["--results", str(exp), "--set", "blend.decode=joint"]) == 0
    return exp


def _oof(exp) -> OofLogits:
    from orchestrator.analysis.results import load_oof

    return load_oof(exp / "oof.parquet", N_SPLITS, list(MODELS))


def test_report_is_self_contained_and_names_the_chosen_blend(reported):
    page = (reported / "report.html").read_text()
    assert not re.search(r'(src|href)="(?!data:)', page) and "<script" not in page and "<link" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 5  # weights, 18x18 confusion, attribute confusions, per-class F1, correlation
    assert all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    weights = json.loads((reported / "blend" / "weights.json").read_text())
    assert f"Chosen blend <b>{weights['method']}</b>" in page
    assert f"Nested macro F1 <b>{weights['nested']['macro_f1']:.4f}</b>" in page
    for method in pd.read_csv(reported / "blend" / "leaderboard.csv").method:
        assert f"<td>{method}</td>" in page


def test_fold_table_comes_from_the_oof_logits_without_a_run_leaderboard(reported):
    oof = _oof(reported)
    table = reporting.fold_table(oof, reported / "no_such_leaderboard.csv")
    for m, model in enumerate(oof.models):
        for k in range(N_SPLITS):
            rows = oof.fold == k
            expected = f1_score(oof.target[rows], oof.logits[m, rows].argmax(1), average="macro")
            assert table.loc[model, f"fold {k}"] == pytest.approx(expected)
        pooled = f1_score(oof.target, oof.logits[m].argmax(1), average="macro")
        assert table.loc[model, "OOF pooled"] == pytest.approx(pooled)
    assert table.loc["blind", "OOF pooled"] < 0.2 < table.loc["wide", "OOF pooled"]


def test_fold_table_prefers_the_run_leaderboard(reported, tmp_path):
    rows = [{"model": m, "backbone": "resnet18", "fold": str(k), "macro_f1": 0.1 * i + 0.01 * k}
            for i, m in enumerate(MODELS) for k in range(N_SPLITS)]
    rows += [{"model": m, "backbone": "resnet18", "fold": "mean", "macro_f1": 9.0} for m in MODELS]
    path = tmp_path / "leaderboard.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    table = reporting.fold_table(_oof(reported), path)
    assert table.loc["narrow", "fold 2"] == pytest.approx(0.12)
    assert table.loc["narrow", "fold mean"] == pytest.approx(0.11)  # the "mean" rows are not folds
    assert list(table.columns[:N_SPLITS]) == [f"fold {k}" for k in range(N_SPLITS)]


def test_error_correlation_sees_twins_and_strangers():
    y = make_targets(3000, 8)
    a, b = model_logits(y, 1, (1.5, 1.5, 0.8)), model_logits(y, 2, (1.5, 1.5, 0.8))
    oof = OofLogits(("a", "a_again", "b"), np.stack([a, a, b]), np.arange(3000).astype(str),
                    np.arange(3000).astype(str), np.zeros(3000, int), y, "h", ())
    corr = reporting.error_correlation(oof)
    assert corr.loc["a", "a_again"] == pytest.approx(1.0)
    assert abs(corr.loc["a", "b"]) < 0.1


def test_report_cli_rebuilds_the_page_and_needs_a_blend_first(reported, tmp_path, capsys):
    (reported / "report.html").unlink()
    assert report.main(["--results", str(reported)]) == 0
    assert "Model-to-model OOF error correlation" in (reported / "report.html").read_text()
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("spec.yaml", "oof.parquet"):
        (bare / name).write_bytes((reported / name).read_bytes())
    assert report.main(["--results", str(bare)]) == 2
    assert "run python -m orchestrator.blend first" in capsys.readouterr().err
    assert not (bare / "report.html").exists()
