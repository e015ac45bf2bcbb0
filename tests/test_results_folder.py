"""Which experiment a command takes without --results, and that it says so."""
import os

import pytest

from orchestrator.analysis.results_folder import PREFER_BLENDED, PREFER_GATHERED, ResultsError, find_experiment


def make_experiment(root, name, gathered_at, blended_at=None):
    d = root / name
    (d / "blend").mkdir(parents=True)
    for path, at in ((d / "spec.yaml", gathered_at), (d / "oof.parquet", gathered_at),
                     (d / "blend" / "weights.json", blended_at)):
        if at is not None:
            path.write_text("x")
            os.utime(path, (at, at))
    return d


def test_audit_takes_the_experiment_blended_last_and_blend_the_one_gathered_last(tmp_path):
    demo = make_experiment(tmp_path, "demo", gathered_at=1000, blended_at=1100)
    second = make_experiment(tmp_path, "pseudo_demo", gathered_at=1200)  # run after the demo, not blended
    make_experiment(tmp_path, "old", gathered_at=500, blended_at=600)
    lines = []
    assert find_experiment(None, tmp_path, prefer=PREFER_BLENDED, log=lines.append) == demo
    assert find_experiment(None, tmp_path, prefer=PREFER_GATHERED, log=lines.append) == second
    assert lines == [f"experiment: {demo} (blended last of the 3 under {tmp_path}/; --results picks another)",
                     f"experiment: {second} (gathered last of the 3 under {tmp_path}/; --results picks another)"]


def test_with_nothing_blended_the_one_gathered_last_is_taken_and_a_folder_given_is_kept(tmp_path):
    make_experiment(tmp_path, "a", gathered_at=1000)
    b = make_experiment(tmp_path, "b", gathered_at=2000)
    lines = []
    assert find_experiment(None, tmp_path, prefer=PREFER_BLENDED, log=lines.append) == b
    assert "gathered last" in lines[-1]
    assert find_experiment(tmp_path / "a", tmp_path, log=lines.append) == tmp_path / "a"
    assert lines[-1] == f"experiment: {tmp_path / 'a'}"


def test_no_experiment_or_a_folder_without_a_spec_is_one_clear_error(tmp_path):
    with pytest.raises(ResultsError, match="no experiment with gathered logits"):
        find_experiment(None, tmp_path)
    (tmp_path / "rounds").mkdir()
    with pytest.raises(ResultsError, match="rounds: not an experiment's results folder"):
        find_experiment(tmp_path / "rounds", tmp_path)
