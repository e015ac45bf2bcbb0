"""Shared fixtures: one small synthetic dataset per session (real JPEG/PNG files)."""
import os
import shutil
from pathlib import Path

import pytest

from tasks.synth import write_synth

# No hub downloads in tests, ever: pretrained weights must come from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """60 people at 48x64, read-only by convention: copy it before changing files."""
    root = tmp_path_factory.mktemp("synth") / "data"
    write_synth(root, persons=60, seed=3, size=(48, 64), mislabel_rate=0.05, workers=1)
    return root


@pytest.fixture
def data_copy(synth_root, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # One cache folder for the whole session: tests share decoded images like real runs do.
    monkeypatch.setenv("MASKFOLD_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
