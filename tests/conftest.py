"""Shared fixtures: one small synthetic dataset per session (real JPEG/PNG files), the shrunk
demo spec, and a decode cache of the session's own (never the user's ~/.cache)."""
import os
import shutil
from pathlib import Path

import pytest

from tasks.synth.write import write_synth
from tests.helpers.specs import shrunk_spec

# No hub downloads in tests, ever: pretrained weights must come from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """One cache folder for the whole session, set before any other fixture of any scope (an
    autouse session fixture comes first), so module-scoped fixtures use it too."""
    saved = os.environ.get("MASKFOLD_CACHE")
    os.environ["MASKFOLD_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    yield
    if saved is None:
        os.environ.pop("MASKFOLD_CACHE", None)
    else:
        os.environ["MASKFOLD_CACHE"] = saved


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Jobs trained in this process run on one thread, as on a one-CPU Train worker (Ray sets
    its OMP_NUM_THREADS). Two threads on two cores slow these tiny models down 5-50x as soon
    as anything else wants a core: OpenMP's threads wait for each other at every layer."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


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


@pytest.fixture
def make_spec(synth_root, tmp_path):
    """`make_spec(*overrides, name=...)`: the shrunk demo spec on the session's data, results
    in this test's tmp_path."""
    return lambda *overrides, name="t": shrunk_spec(synth_root, tmp_path, *overrides, name=name)


@pytest.fixture(scope="session")
def blended_experiment(synth_root, tmp_path_factory) -> Path:
    """A real experiment, trained and blended: one multi-head test_efficientnet x 2 folds x 1 epoch
    with flip TTA, for predict and export (tests/helpers/trained.py). Read-only by convention."""
    from tests.helpers.trained import train_and_blend

    spec = shrunk_spec(synth_root, tmp_path_factory.mktemp("blended"), "train.tta_flip=true",
                       "models=[{backbone: test_efficientnet, name: effnet_multi, train: {head: multi}}]",
                       name="predicttest")
    return train_and_blend(spec, "--set", "blend.rounds=5")
