"""One fold model of a blended model, as the runners (torch, onnxruntime) need it. No torch here."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.serving.images import Decoding


@dataclass(frozen=True)
class ModelInput:
    """What a fold model's eval path does to a decoded photo: its eval pipeline, the resize to its
    input size, and its TTA (train.tta_flip)."""

    input_size: tuple[int, int]  # (H, W)
    eval_steps: Any  # train.augment.eval: a pipeline (tasks.spec.augment.Pipeline)
    tta_flip: bool

    @classmethod
    def of(cls, train) -> ModelInput:
        """From a model's resolved train section (tasks.spec.experiment.TrainSpec)."""
        return cls(tuple(train.input_size), train.augment.eval, train.tta_flip)

    def record(self) -> dict:
        return {"input_size": list(self.input_size), "eval_pipeline": self.eval_steps, "tta_flip": self.tta_flip}

    @classmethod
    def from_record(cls, record: dict) -> ModelInput:
        return cls(tuple(record["input_size"]), record["eval_pipeline"], bool(record["tta_flip"]))


@dataclass(frozen=True)
class FoldMember:
    """A fold model: which blended model it belongs to, where its weights are, how its photos are made."""

    key: str  # unique in the ensemble: <experiment>/<job id>
    model: str  # the blended model's name, as in the blend record (weights.json)
    fold: int
    weights: Path  # the job's best.pt, or an exported model.onnx
    decoding: Decoding
    model_input: ModelInput
    spec: Any = None  # the experiment (tasks.spec.experiment.Experiment), for the torch runner
    spec_model: str = ""  # the model's name in its own experiment
