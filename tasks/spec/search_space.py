"""The `search:` section: which spec fields a hyperparameter search samples, and how.

A space maps a dotted spec path (the same paths as `--set`) to one distribution. A trial is
the experiment with its sampled values set at those paths and validated like a hand-written
spec, so a search can only ever produce experiments that `orchestrator.run` accepts.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.spec.overrides import deep_merge

# Data and folds are prepared once for every trial: only what a job trains can be searched.
SEARCHABLE = ("train.", "models.", "seed")
KINDS = ("uniform", "loguniform", "randint", "choice")


class Distribution(BaseModel):
    """Exactly one of: uniform [lo, hi], loguniform [lo, hi], randint [lo, hi] (both ends
    included), choice [a, b, ...]."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: list[Any] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)}; got {given or 'none'}")
        if self.kind != "choice":
            lo, hi = self.bounds
            if not lo < hi or (self.kind == "loguniform" and lo <= 0):
                raise ValueError(f"{self.kind}: need low < high{' and low > 0' if self.kind == 'loguniform' else ''}, "
                                 f"got [{lo}, {hi}]")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def bounds(self) -> tuple:
        return getattr(self, self.kind)

    def examples(self) -> list[Any]:
        """Values that span the distribution: its ends, or every choice."""
        return list(self.choice) if self.kind == "choice" else list(self.bounds)


class SearchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    space: dict[str, Distribution] = Field(min_length=1)
    searcher: Literal["optuna", "random", "grid"] = "optuna"  # grid: every combination of the choices
    num_samples: int | None = Field(None, ge=1)  # trials; default 10 (grid: 1 pass over the grid)
    scheduler: Literal["asha", "fifo"] = "asha"  # asha: stop weak trials at rungs of epochs
    grace_epochs: int = Field(1, ge=1)  # asha: epochs every trial runs before it can be stopped
    reduction_factor: int = Field(3, ge=2)  # asha: 1 in this many trials goes on at each rung
    folds: list[int] = Field(default_factory=lambda: [0], min_length=1)  # a trial's score: their mean

    @model_validator(mode="before")
    @classmethod
    def _flat_paths(cls, data: Any) -> Any:
        # `--set search.space.train.optimizer.lr={...}` (or nested YAML) arrives as nested
        # sections; the space's keys are dotted paths.
        if isinstance(data, dict) and isinstance(data.get("space"), dict):
            data = {**data, "space": _flatten(data["space"])}
        return data

    @model_validator(mode="after")
    def _grid_needs_choices(self) -> SearchSpec:
        if self.searcher == "grid":
            continuous = [path for path, d in self.space.items() if d.kind != "choice"]
            if continuous:
                raise ValueError(f"searcher grid needs `choice` lists; {', '.join(continuous)} "
                                 "are ranges (use optuna or random, or list the values)")
        return self

    @property
    def trials(self) -> int:
        """Trials the search runs (grid: the grid size times num_samples)."""
        if self.searcher != "grid":
            return self.num_samples or 10
        size = 1
        for d in self.space.values():
            size *= len(d.choice)
        return size * (self.num_samples or 1)


def _flatten(space: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in space.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def check_search(search: SearchSpec, dump: dict, n_splits: int) -> list[str]:
    """Problems of a search section against the experiment it belongs to (`dump`: the
    validated experiment as JSON), one `search.<field>: ...` line each."""
    problems = [f"search.folds: fold {k} is outside 0..{n_splits - 1} (folds.n_splits is {n_splits})"
                for k in search.folds if not 0 <= k < n_splits]
    if len(set(search.folds)) != len(search.folds):
        problems.append(f"search.folds: {search.folds} repeats a fold")
    full = _with_model_trains(dump)
    for path in search.space:
        where = f"search.space.{path}"
        if not path.startswith(SEARCHABLE) or path == "models":
            problems.append(f"{where}: only train.*, models.* and seed can be searched "
                            "(data, folds and pseudo labels are prepared once for all trials)")
        elif not _path_exists(full, path.split(".")):
            problems.append(f"{where}: no such field in the spec (paths are those of --set, "
                            "e.g. train.optimizer.lr or models.0.backbone)")
    return problems


def _path_exists(node: Any, parts: list[str]) -> bool:
    for part in parts:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True


def _with_model_trains(dump: dict) -> dict:
    """`dump` where each model's `train` (only its overrides) is the whole train section it
    gets, so that any train field is a path under models.<i>.train."""
    models = [{**m, "train": deep_merge(dump["train"], m.get("train") or {})} for m in dump["models"]]
    return {**dump, "models": models}
