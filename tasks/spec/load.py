"""Reading an experiment: YAML, `--set` overrides, validation, and checks that its data is there and its
results folder can be made."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tasks.lock import check_results_folder
from tasks.spec.experiment import Experiment, SpecError, error_lines
from tasks.spec.overrides import apply_overrides, set_value
from tasks.user_files import InputError, read_yaml


def load_spec(path: str | Path, overrides: list[str] = (), check_data: bool = True) -> Experiment:
    """Load, override, validate. Raises SpecError with one line per problem."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: no such experiment file")
    try:
        raw = read_yaml(path, "the experiment file", "give the path of an experiment YAML, e.g. experiments/demo.yaml")
    except InputError as err:
        raise SpecError(str(err)) from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        raw = apply_overrides(raw, list(overrides))
    except ValueError as err:
        raise SpecError(f"{path}: --set: {err}") from None
    raw.setdefault("name", path.stem)
    try:
        spec = Experiment.model_validate(raw)
    except ValidationError as err:
        raise SpecError(format_errors(path, err)) from None
    if check_data:  # a spec to run: its data must be there and its results folder possible
        check_data_root(path, spec)
        check_results_folder(spec.out_dir)
    return spec


def format_errors(path: Path, err: ValidationError) -> str:
    return "\n".join(f"{path}: {line}" for line in error_lines(err))


def check_data_root(path: Path, spec: Experiment) -> None:
    root = spec.data.root
    missing = [p for p in ("train/images", "train/train.csv", "eval/info.csv", "eval/images")
               if not (root / p).exists()]
    if not missing:
        return
    raise SpecError(
        f"{path}: data.root: {root.resolve()} is missing {', '.join(missing)}.\n"
        f"  Put the competition data there (unpack it so that {root}/train/images/<profile>/ and "
        f"{root}/eval/info.csv exist), or point elsewhere with --set data.root=/path/to/data.\n"
        f"  No data? Try the synthetic demo: python -m orchestrator.demo"
    )


def sampled_spec(base: dict, values: dict[str, Any]):
    """The experiment `base` (a spec as JSON) with `values` set at their dotted paths,
    validated like a hand-written spec: an Experiment, or ValueError naming each field."""
    raw = copy.deepcopy(base)
    raw.pop("search", None)
    for path, value in values.items():
        parts = path.split(".")
        model = raw["models"][int(parts[1])] if parts[0] == "models" and len(parts) > 1 else None
        if parts[2:] == ["backbone"] and model.get("name") == model.get("backbone"):
            model["name"] = ""  # named after its backbone: it takes the sampled one's name
        set_value(raw, parts, value)
    try:
        return Experiment.model_validate(raw)
    except ValidationError as err:
        raise ValueError("sampled values do not make a valid spec: " + "; ".join(error_lines(err))) from None
