"""Augmentation and mixing sections of the spec: albumentations pipelines written in YAML.

A pipeline is either a list of `{name: <albumentations transform>, <its params>}` steps
or albumentations' own serialised form (`A.to_dict` output). Resizing to the model's
input size and the model's normalisation are appended by the job, not written here.
"""
from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Pipeline = list[dict[str, Any]] | dict[str, Any]

DEFAULT_TRAIN: list[dict[str, Any]] = [
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5},
    {"name": "HueSaturationValue", "p": 0.3},
    # Random erasing, as the 2022 winner used (cheaper than per-pixel noise, too).
    {"name": "CoarseDropout", "num_holes_range": [1, 3], "hole_height_range": [0.05, 0.15],
     "hole_width_range": [0.05, 0.15], "p": 0.3},
]


def build_pipeline(steps: Pipeline):
    """An albumentations Compose from either pipeline form; ValueError names the bad step."""
    import albumentations as A

    if isinstance(steps, dict):
        try:
            return A.from_dict(steps)
        except Exception as err:  # albumentations raises several types for bad dicts
            raise ValueError(f"not an albumentations serialised pipeline: {err}") from None
    transforms = []
    for i, step in enumerate(steps):
        params = dict(step)
        name = params.pop("name", None)
        cls = getattr(A, name, None) if isinstance(name, str) else None
        if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform | A.BaseCompose)):
            raise ValueError(f"step {i}: {name!r} is not an albumentations transform")
        unknown = sorted(set(params) - set(inspect.signature(cls).parameters))
        if unknown:
            raise ValueError(f"step {i} ({name}): unknown parameter(s) {unknown}")
        try:
            transforms.append(cls(**params))
        except (TypeError, ValueError) as err:
            raise ValueError(f"step {i} ({name}): {_one_line(err)}") from None
    return A.Compose(transforms)


def image_pipeline(steps: Pipeline, size: tuple[int, int]):
    """What one cached image goes through before the model: `steps`, then resizing to the model's
    input size (H, W). The one definition, shared by the loaders (tasks/data/batches.py) and the
    exported runner, which has no torch (tasks/serving/onnx_runner.py)."""
    import albumentations as A

    return A.Compose([build_pipeline(steps), A.Resize(*size)])


def _one_line(err: Exception) -> str:
    # albumentations wraps a pydantic ValidationError in a ValueError; keep its field messages.
    cause = err.__cause__
    if isinstance(cause, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in cause.errors())
    return str(err).splitlines()[0]


class AugmentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    train: Pipeline = Field(default_factory=lambda: [dict(s) for s in DEFAULT_TRAIN])
    eval: Pipeline = Field(default_factory=list)  # applied to validation and test images

    @field_validator("train", "eval")
    @classmethod
    def _builds(cls, v: Pipeline) -> Pipeline:
        build_pipeline(v)
        return v


class MixSpec(BaseModel):
    """Batch mixing: timm's Mixup for cutmix/mixup; `vstrip` swaps a vertical strip."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Literal["none", "cutmix", "mixup", "vstrip"] = "none"
    prob: float = Field(0.5, ge=0, le=1)
    alpha: float = Field(1.0, gt=0)
    # vstrip: the left part of one image joined to the right part of another, with the
    # border drawn uniformly from this range of the width (the 2022 winner used 0.46-0.54).
    strip_ratio: tuple[float, float] = (0.46, 0.54)
