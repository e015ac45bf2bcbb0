"""Grad-CAM of one fold model (the `grad-cam` package) and the share of its mass in a face box.

The target layer rule, per timm backbone: the deepest stage in timm's `feature_info` (the
layer Grad-CAM's authors use: ResNet layer4, ConvNeXt's last stage, EfficientNet's last
block) whose output at the model's input size is an NCHW map at least MIN_CELLS cells on its
shorter side; if every stage is smaller, the largest one. Deeper layers mean more, but a 2x1
map (a 64x48 input at stride 32) cannot tell a face from the background. A backbone without
`feature_info`, or whose stages give tokens rather than a map (ViTs need a reshape_transform
per architecture), has no target layer: NoCamLayer says so and that model is skipped.

The CAM is for the class the model predicted: on a mistake it shows what the wrong answer
looked at, on a sample what the model relies on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tasks.errors import UserError

MIN_CELLS = 3


class NoCamLayer(UserError):
    """The backbone has no layer Grad-CAM can use; the model is skipped."""


@dataclass(frozen=True)
class CamLayer:
    name: str  # module path inside the backbone (net.body)
    grid: tuple[int, int]  # the map's H, W cells at the model's input size


class Logits18(torch.nn.Module):
    """The Net's 18-class logits as one tensor: what Grad-CAM's targets index."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from tasks.train.model import logits18

        return logits18(self.net(x))


def find_cam_layer(body: torch.nn.Module, input_size: tuple[int, int], backbone: str = "") -> CamLayer:
    """The rule in the module docstring; NoCamLayer naming the backbone when there is none."""
    info = getattr(body, "feature_info", None)
    names = [f["module"] for f in info] if info is not None else []
    if not names:
        raise NoCamLayer(f"{backbone}: timm gives no feature_info stages, so there is no layer to take Grad-CAM of")
    shapes = _stage_shapes(body, names, input_size)
    maps = [(n, s[2:]) for n, s in shapes.items() if len(s) == 4]
    if not maps:
        raise NoCamLayer(f"{backbone}: its stages output {len(next(iter(shapes.values()), ()))}-D tokens, not an "
                         "NCHW map (a ViT-style model needs an architecture-specific reshape_transform, not supported)")
    good = [(n, g) for n, g in maps if min(g) >= MIN_CELLS]
    name, grid = good[-1] if good else max(maps, key=lambda m: m[1][0] * m[1][1])
    return CamLayer(name, (int(grid[0]), int(grid[1])))


def _stage_shapes(body: torch.nn.Module, names: list[str], input_size: tuple[int, int]) -> dict[str, tuple]:
    """Each stage's output shape on one blank image, in feature_info order."""
    shapes: dict[str, tuple] = {}

    def keep(name: str):
        def hook(_module, _inputs, out) -> None:  # returns None: a returned value would replace the output
            shapes.setdefault(name, tuple(out.shape) if torch.is_tensor(out) else ())
        return hook

    hooks = [body.get_submodule(n).register_forward_hook(keep(n)) for n in names]
    was_training = body.training
    try:
        body.eval()
        with torch.no_grad():
            body(torch.zeros(1, 3, *input_size, device=next(body.parameters()).device))
    finally:
        body.train(was_training)
        for h in hooks:
            h.remove()
    return {n: shapes.get(n, ()) for n in names}


def grad_cams(net: torch.nn.Module, layer: CamLayer, x: torch.Tensor, classes: np.ndarray,
              batch: int = 32) -> np.ndarray:
    """(N, H, W) float32 Grad-CAMs in [0, 1] at the input's size for `classes` (one per image).

    `x` is the normalised NCHW batch the model sees; float32 on the model's device.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = Logits18(net).eval()
    out = []
    with GradCAM(model=model, target_layers=[net.body.get_submodule(layer.name)]) as cam:
        for start in range(0, len(x), batch):
            targets = [ClassifierOutputTarget(int(c)) for c in classes[start:start + batch]]
            out.append(cam(input_tensor=x[start:start + batch], targets=targets).astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, *x.shape[2:]), np.float32)


def box_mask(shape: tuple[int, int], box: np.ndarray) -> np.ndarray:
    """Pixels of an (H, W) image whose centres lie in `box` = fractions x0, y0, x1, y1 of it."""
    height, width = shape
    xs, ys = (np.arange(width) + 0.5) / width, (np.arange(height) + 0.5) / height
    inside_x = (xs >= box[0]) & (xs < box[2])
    inside_y = (ys >= box[1]) & (ys < box[3])
    return inside_y[:, None] & inside_x[None, :]


def face_focus(cam: np.ndarray, box: np.ndarray) -> float:
    """Share of the CAM's mass inside the box; NaN when the box is unknown or the CAM is empty."""
    total = float(cam.sum())
    if not np.isfinite(box).all() or total <= 0:
        return float("nan")
    return float(cam[box_mask(cam.shape, box)].sum() / total)


def box_share(shape: tuple[int, int], box: np.ndarray) -> float:
    """What a uniform CAM would score: the box's share of the pixels."""
    if not np.isfinite(box).all():
        return float("nan")
    return float(box_mask(shape, box).mean())
