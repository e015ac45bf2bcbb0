"""The one spec the tests start from: experiments/demo.yaml, shrunk by overrides.

A test names only what it changes (`shrunk_spec(root, results, "train.epochs=3")`); the rest
is the demo's own settings at the smallest size that still exercises them: 2 folds, 1 epoch,
one tiny model, no TTA, one CPU per worker.
"""
from __future__ import annotations

from pathlib import Path

from tasks.spec.experiment import Experiment
from tasks.spec.load import load_spec

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "experiments" / "demo.yaml"
SHRUNK = ("folds.n_splits=2", "train.epochs=1", "train.tta_flip=false", "models=[{backbone: test_convnext}]",
          "resources.cpus_per_worker=1")


def shrunk_overrides(root: Path, results: Path, *overrides: str, name: str = "t") -> list[str]:
    """`--set` values: the data, the results folder, the name, the shrinking, then `overrides`."""
    return [f"data.root={root}", f"results_dir={results}", f"name={name}", *SHRUNK, *overrides]


def shrunk_spec(root: Path, results: Path, *overrides: str, name: str = "t") -> Experiment:
    return load_spec(DEMO, shrunk_overrides(root, results, *overrides, name=name))


def shrunk_cli(root: Path, results: Path, *overrides: str, name: str = "t") -> list[str]:
    """The same spec as command-line arguments: the demo YAML and its `--set`s."""
    args = [str(DEMO)]
    for item in shrunk_overrides(root, results, *overrides, name=name):
        args += ["--set", item]
    return args
