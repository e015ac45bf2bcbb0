"""A timm backbone with a single 18-class head, mask/gender/age heads, or (a specialist,
`train.target`) one head of its attribute alone."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tasks.labels import ALL, ATTRIBUTE_SIZES, NUM_CLASSES
from tasks.spec.experiment import ModelSpec, TrainSpec

HEAD_SIZES = ATTRIBUTE_SIZES


class PretrainedError(RuntimeError):
    """Pretrained weights could not be loaded; the message says what to do instead."""


class Net(nn.Module):
    def __init__(self, body: nn.Module, head: str, drop_rate: float, age_regression: bool, target: str = ALL):
        super().__init__()
        self.body = body
        self.drop = nn.Dropout(drop_rate)
        # Models with a conv head (MobileNetV3, LCNet) pool to head_hidden_size, not num_features.
        width = getattr(body, "head_hidden_size", None) or body.num_features
        if target != ALL:  # a specialist: its attribute's head alone (the spec refuses head: multi)
            self.heads = nn.ModuleDict({target: nn.Linear(width, HEAD_SIZES[target])})
        elif head == "single":
            self.heads = nn.ModuleDict({"class": nn.Linear(width, NUM_CLASSES)})
        else:
            self.heads = nn.ModuleDict({k: nn.Linear(width, n) for k, n in HEAD_SIZES.items()})
        if age_regression and (head == "multi" or target == "age"):
            self.heads["age_value"] = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.drop(self.body(x))
        return {k: head(features) for k, head in self.heads.items()}


def logits18(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """18-class logits from either head: multi-head logits are the joint log-probability
    log p(mask) + log p(gender) + log p(age), so every model writes comparable columns."""
    if "class" in outputs:
        return outputs["class"]
    mask, gender, age = (torch.log_softmax(outputs[k].float(), dim=1) for k in ("mask", "gender", "age"))
    joint = mask[:, :, None, None] + gender[:, None, :, None] + age[:, None, None, :]
    return joint.reshape(len(joint), NUM_CLASSES)


def specialty(outputs: dict[str, torch.Tensor]) -> str | None:
    """The attribute a specialist's outputs predict alone; None for an all-class model."""
    own = [k for k in HEAD_SIZES if k in outputs]
    return own[0] if "class" not in outputs and len(own) == 1 else None


def output_logits(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The logits a model writes: its 18 classes (logits18), or a specialist's own attribute's."""
    own = specialty(outputs)
    return logits18(outputs) if own is None else outputs[own]


def build_model(model: ModelSpec, train: TrainSpec) -> Net:
    body = create_body(model)
    return Net(body, train.head, train.drop_rate, age_regression=train.age_mse > 0, target=train.target)


def create_body(model: ModelSpec) -> nn.Module:
    import timm

    if model.pretrained_path is not None:
        path = Path(model.pretrained_path)
        if not path.is_file():
            raise PretrainedError(f"models[{model.name}].pretrained_path: {path} is not a file")
        try:  # timm's own local-file loading: it adapts or drops the classifier as for hub weights
            return timm.create_model(model.backbone, pretrained=True, num_classes=0,
                                     pretrained_cfg_overlay={"file": str(path)})
        except Exception as err:  # torch and timm raise many types for a bad file
            raise PretrainedError(
                f"models[{model.name}].pretrained_path: {path} could not be loaded as {model.backbone} "
                f"weights ({type(err).__name__}: {str(err).splitlines()[0][:200]}). It must be a state_dict "
                "saved with torch.save (or .safetensors) for this backbone.") from None
    if not model.pretrained:
        return timm.create_model(model.backbone, pretrained=False, num_classes=0)
    try:
        return timm.create_model(model.backbone, pretrained=True, num_classes=0)
    except Exception as err:  # hub, network and file errors all mean "no weights here"
        raise PretrainedError(
            f"models[{model.name}]: could not fetch pretrained weights for {model.backbone!r} "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
            "This machine may be offline. Download the weights where there is network "
            "(e.g. timm.create_model(name, pretrained=True) and torch.save(model.state_dict(), FILE)), "
            "then set pretrained_path: FILE, or set pretrained: false."
        ) from None
