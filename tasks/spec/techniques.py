"""Train options beyond the plain loop: test-time augmentation (`tta`), a moving average of the
weights (`ema`), gradient accumulation and clipping. Validated here; the train section holds them.

Each is off by default and then absent from every hash, so the jobs of a spec that sets none of
them keep their ids. `tta: [hflip]` with `tta_flip: true` (or `tta: []` with `tta_flip: false`)
infers exactly as before and keeps them too.

TTA views are short names (ttach's transforms behind them, tasks/train/tta.py):
  hflip                        the mirrored image (ttach HorizontalFlip): x2 views
  scale or {scale: [a, b]}     the image rescaled by each factor besides 1 (ttach Scale, bilinear):
                               x(1 + factors); the backbone must accept other input sizes
  five_crop or {five_crop: f}  four corner crops and the centre, each f of the height and width,
                               resized back to the input size (ttach FiveCrops + Resize): x5
Views combine as a product (ttach's Compose): [hflip, five_crop] is ten-crop, 10 views.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_serializer,
    model_validator,
)

KINDS = ("hflip", "scale", "five_crop")  # the order views are listed in, whatever the YAML's order
DEFAULTS: dict[str, dict] = {"hflip": {"hflip": True}, "scale": {"scale": [0.875, 1.125]},
                             "five_crop": {"five_crop": 0.875}}
STEP_HELP = "use hflip, scale, five_crop, {scale: [0.875, 1.125]} or {five_crop: 0.875}"


def _one_or_more(value: Any) -> Any:
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else value  # {scale: 0.9}


class TtaView(BaseModel):
    """One TTA step: exactly one of its fields. Written back as the short form (`hflip`,
    `{scale: [...]}`, `{five_crop: f}`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hflip: Literal[True] | None = None
    scale: Annotated[list[Annotated[float, Field(gt=0.25, lt=4)]], BeforeValidator(_one_or_more)] | None = Field(
        None, min_length=1)
    five_crop: float | None = Field(None, ge=0.5, lt=1)

    @model_validator(mode="after")
    def _one_kind(self) -> TtaView:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a TTA step is one of {', '.join(KINDS)}, got {given or 'none'}; {STEP_HELP}")
        if self.scale is not None and (1 in self.scale or len(set(self.scale)) < len(self.scale)):
            raise ValueError(f"scale: {list(self.scale)}: give each factor once and leave out 1 (always included)")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def views(self) -> int:
        return {"hflip": 2, "scale": 1 + len(self.scale or ()), "five_crop": 5}[self.kind]

    def text(self) -> str:
        if self.kind == "scale":
            return "scale " + "/".join(f"{f:g}" for f in self.scale)
        return "hflip" if self.kind == "hflip" else f"five_crop {self.five_crop:g}"

    @model_serializer(mode="plain")
    def _short(self) -> Any:
        return "hflip" if self.kind == "hflip" else {self.kind: getattr(self, self.kind)}


def _from_name(value: Any) -> Any:
    if isinstance(value, str):
        if value not in DEFAULTS:
            raise ValueError(f"{value!r} is not a TTA step; {STEP_HELP}")
        return DEFAULTS[value]
    return value


def _canonical(views: list[TtaView]) -> list[TtaView]:
    kinds = [v.kind for v in views]
    twice = sorted({k for k in kinds if kinds.count(k) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)} listed more than once; give each kind of view once")
    return sorted(views, key=lambda v: KINDS.index(v.kind))  # [scale, hflip] is [hflip, scale]


def _names(value: Any) -> Any:
    return [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value  # --set tta=hflip


TtaViews = Annotated[list[Annotated[TtaView, BeforeValidator(_from_name)]], AfterValidator(_canonical),
                     BeforeValidator(_names)]


class EmaSpec(BaseModel):
    """timm's ModelEmaV3 over the weights, updated after every optimiser step; the EMA model is
    validated, picks the best epoch and writes best.pt and the logits."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    decay: float = Field(gt=0, lt=1)  # no default: the right decay depends on the job's step count
    # timm's use_warmup: decay 1 - (1 + step)^-2/3 up to `decay`, so a short job's EMA is not its init
    warmup: bool = False


@dataclass(frozen=True)
class Tta:
    """A resolved TTA: the views to average the logits over (tasks/train/tta.py applies them)."""

    views: tuple[TtaView, ...] = ()

    @property
    def count(self) -> int:
        n = 1
        for view in self.views:
            n *= view.views
        return n

    def text(self) -> str:
        if not self.views:
            return "none"
        joined = " x ".join(v.text() for v in self.views)
        return joined if self.count == 2 and self.views[0].kind == "hflip" else f"{joined} ({self.count} views)"


NO_TTA = Tta()
FLIP = Tta((TtaView(hflip=True),))


def resolve_tta(train) -> Tta:
    """The TTA a model's train section asks for: `tta` if set, else flip when `tta_flip`."""
    if train.tta is not None:
        return Tta(tuple(train.tta))
    return FLIP if train.tta_flip else NO_TTA


def check_tta_flip(views: list[TtaView] | None, info) -> list[TtaView] | None:
    """TrainSpec's validator of `tta`: when set it decides the TTA, and `tta_flip` (validated
    before it) must agree with it about hflip."""
    tta_flip = info.data.get("tta_flip", True)
    if views is None:
        return views
    has_flip = any(v.kind == "hflip" for v in views)
    if tta_flip and not has_flip:
        raise ValueError(f"[{', '.join(v.text() for v in views)}] has no hflip, but tta_flip is true (its default); "
                         "add hflip to tta, or set tta_flip: false")
    if not tta_flip and has_flip:
        raise ValueError("has hflip, but tta_flip is false; remove hflip from tta, or set tta_flip: true")
    return views


def neutral_fields(train) -> set[str]:
    """The fields of this module that change nothing here: left out of the job's and spec's hash."""
    out = {name for name, off in (("ema", None), ("clip_grad", None), ("grad_accum", 1)) if getattr(train, name) == off}
    if train.tta is None or resolve_tta(train) == (FLIP if train.tta_flip else NO_TTA):
        out.add("tta")
    return out


def parse_tta(text: str) -> Tta:
    """`--tta` on the command line: `none`, comma-separated names (`hflip,five_crop`), or a YAML
    list as in the spec (`[hflip, {scale: [0.9, 1.1]}]`). ValueError says what is wrong."""
    from pydantic import TypeAdapter

    from tasks.user_files import InputError, yaml_value

    text = text.strip()
    if text == "none":
        return NO_TTA
    try:
        raw = yaml_value(text) if text.startswith("[") else text
    except InputError as err:
        raise ValueError(f"--tta {text}: {err}") from None
    try:
        return Tta(tuple(TypeAdapter(TtaViews).validate_python(raw)))
    except ValidationError as err:
        problems = [e["msg"].removeprefix("Value error, ") for e in err.errors()]
        raise ValueError(f"--tta {text}: {'; '.join(problems)}") from None
