"""Draw synthetic face photos: a per-person Look, a per-photo Shot, PIL on a 2x canvas.

All positions are in face radii from the face centre (x right, y down), so the same
code draws at 48x64 and at 384x512. The nose tip sits at y=0.28, the mouth at 0.5,
the chin at 1.0; mask spans below are chosen against those.
"""
from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from tasks.synth.face_boxes import Framing, pixel_box

RGB = tuple[int, int, int]

# Gender is readable from hair length in this share of people, so a model cannot
# reach 100% on gender from the hair alone (lips, brows, beard shadow add a little).
HAIR_RELIABILITY = 0.88
MASK_COLOURS: tuple[RGB, ...] = (
    (238, 240, 242), (150, 190, 222), (28, 28, 32), (128, 130, 136), (40, 52, 92),
    (228, 168, 186), (214, 196, 170), (96, 140, 96), (176, 62, 60),
)
MASK_PATTERNS = ("plain", "pleats", "seam", "stripes", "dots")
# (top, bottom) of the mask: worn covers nose and mouth; "below_nose" leaves the
# nose out; "chin" hangs under the mouth.
MASK_SPANS = {"worn": (0.02, 0.98), "below_nose": (0.36, 1.22), "chin": (0.66, 1.40)}
BG_KINDS = ("gradient", "stripes", "checks", "rings", "waves")
NECKLINES = ("round", "v", "collar")


@dataclass(frozen=True)
class Look:
    """What stays the same over one person's seven photos."""

    bg_kind: str
    bg_a: RGB
    bg_b: RGB
    bg_angle: float
    bg_period: float  # pattern period as a fraction of the image height
    cloth: RGB
    neckline: str
    skin: RGB
    face_w: float  # face half-width as a fraction of the image width
    face_aspect: float
    hair: RGB  # already greyed with age
    hair_length: float  # 0: short cap; else how far below the face centre it falls
    hairline: float  # y of the fringe's lower edge (negative: above the centre)
    brow: float  # eyebrow thickness
    lips: RGB | None
    beard: float  # 0 none .. 1 dark shadow on the lower face
    wrinkles: float  # 0 .. 1, grows with age plus per-person noise


@dataclass(frozen=True)
class Shot:
    """What changes from one photo of a person to the next."""

    mask_span: tuple[float, float] | None
    mask_colour: RGB
    mask_pattern: str
    dx: float  # shift as a fraction of the image width
    dy: float  # shift as a fraction of the image height
    scale: float
    brightness: float
    noise: float  # sigma of the pixel noise


@dataclass(frozen=True)
class Geo:
    """Where the face sits on the canvas."""

    cx: float
    cy: float
    rx: float
    ry: float

    def at(self, fx: float, fy: float) -> tuple[float, float]:
        return (self.cx + fx * self.rx, self.cy + fy * self.ry)

    def box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, ...]:
        (ax, ay), (bx, by) = self.at(x0, y0), self.at(x1, y1)
        return (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))

    def lw(self, frac: float) -> int:
        return max(1, round(frac * self.rx))


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))
    return (round(r * 255), round(g * 255), round(b * 255))


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


def _shade(c: RGB, f: float) -> RGB:
    return tuple(min(255, round(x * f)) for x in c)  # type: ignore[return-value]


def make_look(rng: np.random.Generator, gender: int, age: int) -> Look:
    """Random person; gender and age show through noisy cues only."""
    female = gender == 1
    long_hair = female == (rng.random() < HAIR_RELIABILITY)
    length = (rng.uniform(1.4, 2.3) if female else rng.uniform(0.8, 1.4)) if long_hair else 0.0
    # Greying starts in the late thirties; the per-person noise blurs the 30 and 60 borders.
    grey = float(np.clip((age - 35) / 25 + rng.normal(0, 0.12), 0, 1))
    wrinkles = float(np.clip((age - 20) / 40 + rng.normal(0, 0.1), 0, 1))
    dark_hair = _hsv(rng.uniform(0.03, 0.1), rng.uniform(0.3, 0.6), rng.uniform(0.08, 0.3))
    hairline = -0.5 - (0.3 * wrinkles * rng.random() if not female else 0.0)
    if female and rng.random() < 0.3:
        hairline = -0.3  # bangs
    lips_p = 0.7 if female else 0.06
    angle = rng.uniform(0, math.pi)
    return Look(
        bg_kind=BG_KINDS[rng.integers(len(BG_KINDS))],
        bg_a=_hsv(rng.random(), rng.uniform(0.05, 0.6), rng.uniform(0.35, 0.95)),
        bg_b=_hsv(rng.random(), rng.uniform(0.05, 0.6), rng.uniform(0.35, 0.95)),
        bg_angle=angle,
        bg_period=rng.uniform(0.06, 0.3),
        cloth=_hsv(rng.random(), rng.uniform(0.1, 0.8), rng.uniform(0.15, 0.9)),
        neckline=NECKLINES[rng.integers(len(NECKLINES))],
        skin=_hsv(rng.normal(0.07, 0.012), rng.uniform(0.22, 0.42), rng.uniform(0.72, 0.93)),
        face_w=rng.normal(0.205 if not female else 0.195, 0.01),
        face_aspect=rng.normal(1.3, 0.05),
        hair=_mix(dark_hair, _shade((205, 205, 210), rng.uniform(0.9, 1.05)), grey),
        hair_length=length,
        hairline=hairline + rng.normal(0, 0.04),
        brow=max(0.02, rng.normal(0.05 if female else 0.075, 0.015)),
        lips=_hsv(rng.normal(0.98, 0.02), rng.uniform(0.35, 0.6), rng.uniform(0.6, 0.8))
        if rng.random() < lips_p else None,
        beard=rng.uniform(0.4, 1.0) if not female and rng.random() < 0.3 else 0.0,
        wrinkles=wrinkles,
    )


def make_shots(rng: np.random.Generator, masks: Sequence[int]) -> tuple[Shot, ...]:
    """One Shot per mask state (0 worn, 1 incorrect, 2 none); worn masks never repeat."""
    colours = iter(rng.permutation(len(MASK_COLOURS)))
    shots = []
    for mask in masks:
        colour = MASK_COLOURS[next(colours) if mask == 0 else rng.integers(len(MASK_COLOURS))]
        kind = "worn" if mask == 0 else ("below_nose" if rng.random() < 0.7 else "chin")
        shots.append(Shot(
            mask_span=None if mask == 2 else MASK_SPANS[kind],
            mask_colour=_shade(colour, rng.uniform(0.92, 1.06)),
            mask_pattern=MASK_PATTERNS[rng.integers(len(MASK_PATTERNS))],
            dx=float(np.clip(rng.normal(0, 0.015), -0.04, 0.04)),
            dy=float(np.clip(rng.normal(0, 0.015), -0.04, 0.04)),
            scale=float(np.clip(rng.normal(1, 0.03), 0.92, 1.08)),
            brightness=rng.uniform(0.88, 1.12),
            noise=rng.uniform(1.5, 5.0),
        ))
    return tuple(shots)


def background(look: Look, w: int, h: int) -> np.ndarray:
    """The person's own backdrop (uint8 HxWx3): two colours mixed by a pattern."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / h
    ca, sa = math.cos(look.bg_angle), math.sin(look.bg_angle)
    along, across = xx * ca + yy * sa, -xx * sa + yy * ca
    k = 2 * math.pi / look.bg_period
    if look.bg_kind == "gradient":
        t = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    elif look.bg_kind == "stripes":
        t = 0.5 + 0.5 * np.clip(3 * np.sin(k * along + look.bg_angle * 7), -1, 1)
    elif look.bg_kind == "checks":
        t = 0.5 + 0.5 * np.clip(4 * np.sin(k * along) * np.sin(k * across), -1, 1)
    elif look.bg_kind == "rings":
        r = np.hypot(xx - 0.5 * w / h - 0.3 * ca, yy - 0.4 - 0.3 * sa)
        t = 0.5 + 0.5 * np.sin(k * r)
    else:
        t = 0.5 + 0.5 * np.sin(k * (along + 0.04 * np.sin(across * 20)))
    a, b = np.array(look.bg_a, np.float32), np.array(look.bg_b, np.float32)
    return (a + (b - a) * t[..., None] + 0.5).astype(np.uint8)


def _geo(size: tuple[int, int], look: Look, shot: Shot, framing: Framing) -> Geo:
    w, h = size
    rx = look.face_w * w * shot.scale * framing.scale
    return Geo(cx=w * (0.5 + framing.dx + shot.dx), cy=h * (0.42 + framing.dy + shot.dy), rx=rx,
               ry=rx * look.face_aspect)


def _ellipse_part(box: Sequence[float], y: float, below: bool) -> list[tuple[float, float]]:
    """Polygon of the part of an ellipse below (or above) height y in its own radii.

    A polygon rather than ImageDraw.chord: chord with non-integer angles fills wild
    regions in Pillow 13.
    """
    x0, y0, x1, y1 = box
    ex, ey, ax, ay = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    a = math.asin(min(max(y, -1.0), 1.0))
    start, end = (a, math.pi - a) if below else (math.pi - a, 2 * math.pi + a)
    return [(ex + ax * math.cos(t), ey + ay * math.sin(t)) for t in np.linspace(start, end, 40)]


def _body(d: ImageDraw.ImageDraw, look: Look, g: Geo) -> None:
    d.rounded_rectangle(g.box(-2.6, 1.3, 2.6, 4.5), radius=g.rx, fill=look.cloth)
    if look.hair_length:
        d.rounded_rectangle(g.box(-1.3, -1.15, 1.3, look.hair_length), radius=0.9 * g.rx,
                            fill=look.hair)
    neck = _shade(look.skin, 0.88)
    d.rectangle(g.box(-0.42, 0.6, 0.42, 1.45), fill=neck)
    if look.neckline == "round":
        d.polygon(_ellipse_part(g.box(-0.55, 1.0, 0.55, 1.7), 0.0, True), fill=neck)
    elif look.neckline == "v":
        d.polygon([g.at(-0.5, 1.3), g.at(0.5, 1.3), g.at(0, 2.0)], fill=neck)
    else:
        collar = _mix(look.cloth, (245, 245, 245), 0.8)
        d.polygon([g.at(-0.45, 1.25), g.at(0, 1.65), g.at(-0.75, 1.75)], fill=collar)
        d.polygon([g.at(0.45, 1.25), g.at(0, 1.65), g.at(0.75, 1.75)], fill=collar)


def _face(d: ImageDraw.ImageDraw, look: Look, g: Geo) -> None:
    if not look.hair_length:
        d.ellipse(g.box(-1.06, -1.16, 1.06, 0.2), fill=look.hair)
        for s in (-1, 1):
            d.ellipse(g.box(s * 0.9, -0.2, s * 1.12, 0.2), fill=_shade(look.skin, 0.93))
    d.ellipse(g.box(-1, -1, 1, 1), fill=look.skin)
    if look.beard:
        shadow = _mix(look.skin, (40, 30, 25), 0.3 * look.beard)
        d.polygon(_ellipse_part(g.box(-1, -1, 1, 1), 0.35, True), fill=shadow)
    _wrinkles(d, look, g)
    # The fringe: the top of the hair ellipse, down to the hairline.
    fringe = _ellipse_part(g.box(-1.04, -1.14, 1.04, 0.94), (look.hairline + 0.1) / 1.04, False)
    d.polygon(fringe, fill=look.hair)
    for s in (-1, 1):
        d.ellipse(g.box(s * 0.4 - 0.17, -0.19, s * 0.4 + 0.17, -0.05), fill=(235, 235, 230))
        d.ellipse(g.box(s * 0.4 - 0.07, -0.17, s * 0.4 + 0.07, -0.07), fill=(45, 35, 30))
        d.line([g.at(s * 0.18, -0.3), g.at(s * 0.62, -0.33)], fill=_shade(look.hair, 0.8),
               width=g.lw(look.brow))
    nose = _shade(look.skin, 0.72)
    d.line([g.at(0.02, -0.02), g.at(-0.06, 0.25), g.at(0.07, 0.28)], fill=nose, width=g.lw(0.04))
    if look.lips:
        d.ellipse(g.box(-0.24, 0.44, 0.24, 0.57), fill=look.lips)
    else:
        d.line([g.at(-0.22, 0.5), g.at(0.22, 0.5)], fill=_shade(look.skin, 0.6), width=g.lw(0.04))


def _wrinkles(d: ImageDraw.ImageDraw, look: Look, g: Geo) -> None:
    """Forehead lines, crow's feet and folds: more and darker with age."""
    w = look.wrinkles
    ink = _mix(look.skin, (90, 55, 45), 0.25 + 0.5 * w)
    lw = g.lw(0.03)
    for i in range(int(w * 4.5)):
        y = -0.38 - 0.045 * i
        d.arc(g.box(-0.45, y, 0.45, y + 0.3), start=200, end=340, fill=ink, width=lw)
    for s in (-1, 1):
        for i in range(int(w * 3.5)):
            d.line([g.at(s * 0.62, -0.12 + 0.04 * (i - 1)), g.at(s * 0.8, -0.16 + 0.1 * (i - 1))],
                   fill=ink, width=lw)
        if w > 0.3:
            d.arc(g.box(s * 0.4 - 0.15, -0.12, s * 0.4 + 0.15, 0.02), 20, 160, fill=ink, width=lw)
        if w > 0.45:
            d.line([g.at(s * 0.2, 0.24), g.at(s * 0.34, 0.58)], fill=ink, width=lw)


def _mask_outline(g: Geo, top: float, bottom: float) -> list[tuple[float, float]]:
    # The mask hugs the face ellipse but keeps some width where it hangs below the chin.
    ys = np.linspace(top, bottom, 9)
    half = np.maximum(1.04 * np.sqrt(np.clip(1 - ys**2, 0, None)), 0.55)
    right = [g.at(float(x), float(y)) for x, y in zip(half, ys)]
    left = [g.at(-float(x), float(y)) for x, y in zip(half[::-1], ys[::-1])]
    return [g.at(0, top - 0.06)] + right + [g.at(0, bottom + 0.06)] + left


def _mask(img: Image.Image, shot: Shot, g: Geo) -> None:
    assert shot.mask_span is not None
    top, bottom = shot.mask_span
    pts = _mask_outline(g, top, bottom)
    layer = Image.new("RGB", img.size, shot.mask_colour)
    ld = ImageDraw.Draw(layer)
    ink = _mix(shot.mask_colour, (0, 0, 0) if sum(shot.mask_colour) > 300 else (255, 255, 255), 0.35)
    span = bottom - top
    if shot.mask_pattern == "pleats":
        for f in (0.3, 0.5, 0.7):
            ld.line([g.at(-1.1, top + f * span), g.at(1.1, top + f * span)], fill=ink, width=g.lw(0.04))
    elif shot.mask_pattern == "seam":
        ld.line([g.at(0, top - 0.1), g.at(0, bottom + 0.1)], fill=ink, width=g.lw(0.04))
    elif shot.mask_pattern == "stripes":
        for i in range(-6, 7):
            x = 0.25 * i
            ld.line([g.at(x - 0.5, top), g.at(x + 0.5, bottom + 0.1)], fill=ink, width=g.lw(0.06))
    elif shot.mask_pattern == "dots":
        for x in np.arange(-1.0, 1.01, 0.25):
            for y in np.arange(top + 0.08, bottom + 0.1, 0.16):
                ld.ellipse(g.box(x - 0.04, y - 0.03, x + 0.04, y + 0.03), fill=ink)
    stencil = Image.new("L", img.size, 0)
    ImageDraw.Draw(stencil).polygon(pts, fill=255)
    img.paste(layer, mask=stencil)
    d = ImageDraw.Draw(img)
    strap = _shade(shot.mask_colour, 0.85)
    for s in (-1, 1):
        d.line([g.at(s * 1.0, top + 0.05), g.at(s * 1.02, -0.05)], fill=strap, width=g.lw(0.035))
        d.line([g.at(s * 0.8, top + 0.6 * span), g.at(s * 1.02, 0.1)], fill=strap, width=g.lw(0.035))


def _finish(img: Image.Image, size: tuple[int, int], shot: Shot, rng: np.random.Generator):
    if img.size != size:
        img = img.reduce(img.width // size[0])
    arr = np.asarray(img, dtype=np.float32) * np.float32(shot.brightness)
    # Sum of two uniform bytes: near-Gaussian noise at a sixth of standard_normal's cost.
    u = rng.integers(0, 256, (2, *arr.shape), dtype=np.uint8)
    arr += (u[0].astype(np.float32) + u[1] - np.float32(255)) * np.float32(shot.noise / 104.2)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255, out=arr).astype(np.uint8))


def _supersampling(size: tuple[int, int]) -> int:
    # Small outputs are drawn at 2x and reduced, so thin lines survive as soft edges.
    return 2 if size[0] < 200 else 1


def face_boxes(look: Look, shots: Sequence[Shot], size: tuple[int, int],
               framing: Framing = Framing()) -> list[tuple[int, ...]]:
    """Each shot's face (the skin ellipse, forehead to chin) as x0, y0, x1, y1 pixels of the photo."""
    ss = _supersampling(size)
    canvas = (size[0] * ss, size[1] * ss)
    return [pixel_box(_geo(canvas, look, shot, framing).box(-1, -1, 1, 1), ss, size) for shot in shots]


def render_person(look: Look, shots: Sequence[Shot], size: tuple[int, int],
                  rng: np.random.Generator, framing: Framing = Framing()) -> list[Image.Image]:
    """One image per shot at size (W, H); the backdrop is drawn once per person."""
    ss = _supersampling(size)
    canvas = (size[0] * ss, size[1] * ss)
    bg = Image.fromarray(background(look, *canvas))
    images = []
    for shot in shots:
        img = bg.copy()
        g = _geo(canvas, look, shot, framing)
        d = ImageDraw.Draw(img)
        _body(d, look, g)
        _face(d, look, g)
        if shot.mask_span:
            _mask(img, shot, g)
        images.append(_finish(img, size, shot, rng))
    return images
