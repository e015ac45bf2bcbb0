"""Test-time augmentation with ttach: a resolved `Tta` (tasks/spec/techniques.py) becomes ttach's
Compose of transforms, and a batch's logits are the mean over its views (ttach's Merger).

The views work on the normalised NCHW batch: flips and crops commute with the per-channel
normalisation, and bilinear resizing is linear in it.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from tasks.errors import UserError
from tasks.spec.techniques import Tta

APPLIED = ("five_crop", "scale", "hflip")  # a crop resized back to the input size first, so scales stay


class TtaError(UserError, RuntimeError):
    """The backbone cannot take the images a TTA view feeds it."""


def compose(tta: Tta, size: tuple[int, int]):
    """ttach's Compose for a batch of this (H, W): crops first (resized back to the input size),
    then scales, then the flip; one transformer per view. A few small objects: built per batch."""
    import ttach

    steps = []
    for view in sorted(tta.views, key=lambda v: APPLIED.index(v.kind)):
        if view.kind == "five_crop":
            crop = (max(1, round(size[0] * view.five_crop)), max(1, round(size[1] * view.five_crop)))
            steps += [ttach.FiveCrops(*crop), ttach.Resize([size], interpolation="bilinear", align_corners=False)]
        elif view.kind == "scale":
            steps.append(ttach.Scale(list(view.scale), interpolation="bilinear", align_corners=False))
        else:
            steps.append(ttach.HorizontalFlip())
    return ttach.Compose(steps)


def mean_over_views(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta: Tta) -> torch.Tensor:
    """The mean of `forward` over the views of `x` (for no TTA, `forward(x)` itself)."""
    if not tta.views:
        return forward(x)
    from ttach.base import Merger

    transforms = compose(tta, tuple(x.shape[-2:]))
    merger = Merger("mean", len(transforms))
    for transformer in transforms:
        merger.append(forward(transformer.augment_image(x)))
    return merger.result


def view_sizes(tta: Tta, size: tuple[int, int]) -> list[tuple[int, int]]:
    """The input sizes other than `size` the views feed the model (multi-scale's)."""
    probe = torch.zeros(1, 1, *size)
    return sorted({tuple(t.augment_image(probe).shape[-2:]) for t in compose(tta, size)} - {tuple(size)})


def check_view_sizes(model: torch.nn.Module, tta: Tta, size: tuple[int, int], device: torch.device) -> None:
    """Before training: the backbone takes every size the TTA feeds it, or a TtaError now rather
    than after the last epoch."""
    others = view_sizes(tta, size)
    if not others:
        return
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for h, w in others:
                try:
                    model(torch.zeros(1, 3, h, w, device=device))
                except Exception as err:  # shape errors come as RuntimeError, AssertionError, ValueError
                    raise TtaError(f"train.tta: the backbone does not take the {h}x{w} images that "
                                   f"{tta.text()} feeds it ({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
                                   "use five_crop (resized back to the input size) instead of scale") from None
    finally:
        model.train(was_training)
