"""`data.face:` the face crop applied once, in prepare, before images go into the cache.

A section of its own so the spec module stays about the experiment; `DataSpec.face` is None
by default, and then nothing about the face crop enters any hash (earlier experiments keep
their cache, their rows hash and their job ids).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FaceSpec(BaseModel):
    # Strict's settings, repeated: tasks.spec.experiment imports this module, so it cannot import Strict.
    model_config = ConfigDict(extra="forbid", frozen=True)

    # haar: OpenCV 4.x's bundled cascades (frontal default + alt2, profile as a last resort);
    # none: only the boxes file, every other photo takes the fallback.
    detector: Literal["haar", "none"] = "haar"
    # Haar's own confidence: how many overlapping raw detections were merged into the box.
    # Masked faces score low (2-3 on a masked real photo, 19-26 unmasked), so the default is low.
    min_score: float = Field(2, ge=0)
    margin: float = Field(0.3, ge=0, le=3)  # each side moves out by this share of the box's size
    fallback: Literal["center", "full"] = "center"  # for photos without a box
    background: Literal["keep", "blur", "blank"] = "keep"  # inside the crop, outside the grown box
    boxes: Path | None = None  # CSV image,x0,y0,x1,y1: takes precedence over the detector
