"""Procedurally generated image domains for ``zoosel bench``.

Eight or more *source* domains (10 classes each) train the benchmark's model zoo; eight or
more *target* tasks (8 classes each) are fine-tuned for ground truth. Every image is drawn
from numpy and PIL alone, deterministically from a seed, with deliberately high intra-class
variation (position, scale, rotation, colours, background, clutter, noise, line width) so
that few-shot transfer is hard and models trained on different sources really differ.

Image ``i`` of class ``c`` is a pure function of ``(domain, c, i, seed, size)``: asking for
more images per class extends a set instead of reshuffling it.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from zoosel.errors import UnknownNameError

__all__ = [
    "EXTRA_TARGET_TASKS",
    "FURTHER_TARGET_TASKS",
    "MORE_TARGET_TASKS",
    "SOURCE_DOMAINS",
    "TARGET_TASKS",
    "Domain",
    "generate",
    "get_domain",
    "write_image_folder",
]

Renderer = Callable[[int, np.random.Generator, int], np.ndarray]
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_TAU = 2.0 * np.pi


@dataclass(frozen=True)
class Domain:
    """One family of images: its classes and how to draw an image of each."""

    name: str
    role: str
    classes: tuple[str, ...]
    description: str
    near: str | None = None
    _renderer: Renderer | None = field(default=None, repr=False, compare=False)

    def render(self, label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
        """Draw one ``(size, size, 3)`` uint8 image of class ``label``."""
        if not 0 <= label < len(self.classes):
            raise ValueError(f"{self.name}: label {label} not in [0, {len(self.classes)})")
        if size < 16:
            raise ValueError(f"size must be at least 16, got {size}")
        if self._renderer is None:
            raise NotImplementedError(f"domain {self.name!r} has no renderer")
        return self._renderer(int(label), rng, int(size))


def _stable_id(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# Drawing toolkit: colours, backgrounds, a supersampled PIL canvas in unit coordinates
# ---------------------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] (np.clip's wrapper costs more than the work on small arrays)."""
    return np.minimum(np.maximum(x, 0.0), 1.0)


def _tint(rng: np.random.Generator, luma: float, chroma: tuple[float, float] = (0.2, 1.0)):
    """A random colour whose luma is about ``luma``."""
    r = rng.random(3).astype(np.float32)
    return _unit(luma + rng.uniform(*chroma) * (r - r @ _LUMA))


def _pair(rng: np.random.Generator, gap: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """(background, foreground) colours with a luma gap; the foreground is usually lighter.

    The polarity bias keeps a little first-order signal in raw pixels (a fully random
    polarity would make every class mean the same flat image).
    """
    lo = rng.uniform(0.0, 1.0 - gap)
    hi = rng.uniform(lo + gap, 1.0)
    fg_l, bg_l = (hi, lo) if rng.random() < 0.8 else (lo, hi)
    return _tint(rng, bg_l), _tint(rng, fg_l)


def _hsv(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV (hue in degrees) to RGB in [0, 1]; works on arrays."""
    h = np.asarray(h, dtype=np.float32)[..., None] / 60.0
    k = (np.array([5.0, 3.0, 1.0], dtype=np.float32) + h) % 6.0
    f = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return np.asarray(v, dtype=np.float32)[..., None] * (
        1.0 - np.asarray(s, dtype=np.float32)[..., None] * f
    )


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] (y down, x right)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return yy, xx


@lru_cache(maxsize=32)
def _upsampler(k: int, size: int) -> np.ndarray:
    """(size, k) bilinear interpolation matrix from a k-point grid to ``size`` pixels."""
    pos = np.linspace(0.0, k - 1.0, size)
    lo = np.minimum(np.floor(pos).astype(int), k - 2)
    w = (pos - lo).astype(np.float32)
    m = np.zeros((size, k), dtype=np.float32)
    m[np.arange(size), lo] = 1.0 - w
    m[np.arange(size), lo + 1] = w
    return m


def _smooth_noise(rng: np.random.Generator, size: int, k: int, channels: int = 3) -> np.ndarray:
    """Low-frequency noise: a k x k normal grid upsampled bilinearly to size x size."""
    m = _upsampler(k, size)
    g = rng.standard_normal((k, k, channels), dtype=np.float32)
    rows = np.tensordot(m, g, (1, 0))  # (size, k, channels)
    return np.tensordot(rows, m, (1, 1)).transpose(0, 2, 1)


def _background(rng: np.random.Generator, size: int, colour: np.ndarray) -> np.ndarray:
    """A solid, gradient or blotchy background around ``colour``."""
    kind = rng.integers(3)
    bg = np.broadcast_to(colour, (size, size, 3)).astype(np.float32)
    if kind == 1:
        yy, xx = _grid(size)
        a = rng.uniform(0, _TAU)
        proj = (np.cos(a) * xx + np.sin(a) * yy)[..., None]
        bg = bg + proj * rng.uniform(-0.25, 0.25, 3).astype(np.float32)
    elif kind == 2:
        bg = bg + rng.uniform(0.05, 0.18) * _smooth_noise(rng, size, int(rng.integers(3, 6)))
    return np.clip(bg, 0.0, 1.0)


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (colour * 255.0 + 0.5).tolist()
    return min(max(int(r), 0), 255), min(max(int(g), 0), 255), min(max(int(b), 0), 255)


class _Canvas:
    """A 2x supersampled PIL RGB canvas addressed in unit coordinates [-1, 1]."""

    ss = 2

    def __init__(self, background: np.ndarray) -> None:
        self.size = background.shape[0]
        self.s = self.size * self.ss
        small = Image.fromarray((background * 255.0 + 0.5).astype(np.uint8), "RGB")
        self.img = small.resize((self.s, self.s), Image.Resampling.NEAREST)
        self.draw = ImageDraw.Draw(self.img)

    def _px(self, pts: np.ndarray) -> list[float]:
        return ((np.asarray(pts, dtype=np.float64) + 1.0) * (0.5 * self.s)).ravel().tolist()

    def _w(self, width: float) -> int:
        return max(1, round(width * 0.5 * self.s))

    def polygon(self, pts: np.ndarray, colour: np.ndarray) -> None:
        self.draw.polygon(self._px(pts), fill=_rgb(colour))

    def outline(self, pts: np.ndarray, colour: np.ndarray, width: float) -> None:
        closed = np.concatenate([pts, pts[:2]])
        self.draw.line(self._px(closed), fill=_rgb(colour), width=self._w(width), joint="curve")

    def line(self, pts: np.ndarray, colour: np.ndarray, width: float) -> None:
        self.draw.line(self._px(pts), fill=_rgb(colour), width=self._w(width), joint="curve")

    def disc(self, centre: np.ndarray, r: float, colour: np.ndarray) -> None:
        self.discs(np.asarray(centre)[None], r, colour)

    def discs(self, centres: np.ndarray, r: float, colour: np.ndarray) -> None:
        rp = max(r * 0.5 * self.s, 0.75)
        fill, xy = _rgb(colour), self._px(centres)
        for x, y in zip(xy[::2], xy[1::2], strict=True):
            self.draw.ellipse([x - rp, y - rp, x + rp, y + rp], fill=fill)

    def clutter(self, rng: np.random.Generator, near: np.ndarray, p: float = 0.6) -> None:
        """Faint distractor strokes and blobs in a colour close to the background."""
        if rng.random() > p:
            return
        for _ in range(int(rng.integers(1, 4))):
            col = _unit(near + rng.uniform(-0.18, 0.18, 3))
            if rng.random() < 0.5:
                self.line(rng.uniform(-1.1, 1.1, (2, 2)), col, rng.uniform(0.04, 0.12))
            else:
                self.disc(rng.uniform(-1.0, 1.0, 2), rng.uniform(0.05, 0.2), col)

    def result(self) -> np.ndarray:
        return np.asarray(self.img.reduce(self.ss), dtype=np.float32) * (1.0 / 255.0)


def _finish(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise and quantisation to uint8."""
    sigma = rng.uniform(0.0, 0.07)
    if sigma > 0.01:
        img = img + np.float32(sigma) * rng.standard_normal(img.shape, dtype=np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _affine(
    rng: np.random.Generator,
    rot: float = 180.0,
    scale: tuple[float, float] = (0.6, 1.0),
    shift: float = 0.25,
    shear: float = 0.12,
) -> Callable[[np.ndarray], np.ndarray]:
    """A random similarity-plus-shear map on (n, 2) point arrays."""
    a = np.deg2rad(rng.uniform(-rot, rot))
    s = rng.uniform(*scale)
    c, si = np.cos(a), np.sin(a)
    rot_m = np.array([[c, -si], [si, c]])
    sh = np.array([[1.0, rng.uniform(-shear, shear)], [0.0, 1.0 + rng.uniform(-shear, shear)]])
    m = s * rot_m @ sh
    t = rng.uniform(-shift, shift, 2)
    return lambda pts: np.asarray(pts) @ m.T + t


def _regular(n: int, r: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    a = phase + np.arange(n) * _TAU / n
    return r * np.stack([np.cos(a), np.sin(a)], axis=1)


def _star(n: int, inner: float) -> np.ndarray:
    a = -np.pi / 2 + np.arange(2 * n) * np.pi / n
    r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _resample(pts: np.ndarray, step: float) -> np.ndarray:
    """Points spaced about ``step`` apart along a polyline."""
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(2, int(cum[-1] / step) + 1)
    t = np.linspace(0.0, cum[-1], n)
    return np.stack([np.interp(t, cum, pts[:, 0]), np.interp(t, cum, pts[:, 1])], axis=1)


@lru_cache(maxsize=8)
def _bernstein(k: int, n: int = 12) -> np.ndarray:
    from math import comb

    t = np.linspace(0.0, 1.0, n)[:, None]
    i = np.arange(k)[None, :]
    coef = np.array([comb(k - 1, j) for j in range(k)])[None, :]
    return coef * t**i * (1.0 - t) ** (k - 1 - i)


# ---------------------------------------------------------------------------------------------
# Glyphs: per-class random stroke skeletons, jittered per image
# ---------------------------------------------------------------------------------------------


def _skeletons(salt: str, n: int) -> list[list[tuple[np.ndarray, bool]]]:
    rng = np.random.default_rng([_stable_id(salt), 1])
    out = []
    for _ in range(n):
        strokes = []
        for _ in range(int(rng.integers(2, 4))):
            k = int(rng.integers(3, 5))
            strokes.append((rng.uniform(-0.8, 0.8, (k, 2)), bool(rng.random() < 0.5)))
        out.append(strokes)
    return out


def _glyph_renderer(salt: str, n: int, beaded: bool) -> Renderer:
    skeletons = _skeletons(salt, n)

    def render(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
        bg, fg = _pair(rng)
        cv = _Canvas(_background(rng, size, bg))
        cv.clutter(rng, bg)
        warp = _affine(rng, rot=20.0, scale=(0.65, 1.0), shift=0.15, shear=0.2)
        width = rng.uniform(0.07, 0.22)
        step, radius = rng.uniform(0.15, 0.24), rng.uniform(0.045, 0.085)
        for ctrl, curved in skeletons[label]:
            pts = ctrl + rng.normal(0.0, 0.08, ctrl.shape)
            pts = warp(_bernstein(len(pts)) @ pts if curved else pts)
            if beaded:
                cv.discs(_resample(pts, step), radius, fg)
            else:
                cv.line(pts, fg, width)
        return _finish(cv.result(), rng)

    return render


# ---------------------------------------------------------------------------------------------
# Shapes: filled (source) and outlined (target) geometric shapes
# ---------------------------------------------------------------------------------------------

_CIRCLE = _regular(40)


def _cross(arm: float = 0.33) -> np.ndarray:
    a = arm
    return np.array(
        [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a],
         [-1, a], [-1, -a], [-a, -a]], dtype=float,
    )  # fmt: skip


_ARROW = np.array(
    [[-1, -0.3], [0.1, -0.3], [0.1, -0.75], [1, 0], [0.1, 0.75], [0.1, 0.3], [-1, 0.3]]
)
_HALF_DISC = np.concatenate([_regular(21, phase=0.0)[:11] * [1, 1], [[-1.0, 0.0]]]) + [0, -0.4]
_HEART_T = np.linspace(0, _TAU, 40, endpoint=False)
_HEART = (
    np.stack(
        [
            16 * np.sin(_HEART_T) ** 3,
            -(13 * np.cos(_HEART_T) - 5 * np.cos(2 * _HEART_T) - 2 * np.cos(3 * _HEART_T)
              - np.cos(4 * _HEART_T)),
        ],
        axis=1,
    )
    / 16.0
)  # fmt: skip
_L_SHAPE = np.array([[-0.7, -1], [-0.1, -1], [-0.1, 0.4], [0.7, 0.4], [0.7, 1], [-0.7, 1]])
_T_SHAPE = np.array(
    [[-1, -0.9], [1, -0.9], [1, -0.35], [0.28, -0.35], [0.28, 1], [-0.28, 1], [-0.28, -0.35],
     [-1, -0.35]]
)  # fmt: skip
_TRAPEZOID = np.array([[-0.45, -0.6], [0.45, -0.6], [1, 0.6], [-1, 0.6]])

# Each shape is (outer polygon, hole polygon or None).
_FILLED_SHAPES: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
    "circle": (_CIRCLE, None),
    "square": (_regular(4, phase=np.pi / 4) * 1.2, None),
    "triangle": (_regular(3) * 1.1 + [0, 0.15], None),
    "star": (_star(5, 0.42), None),
    "cross": (_cross(), None),
    "ring": (_CIRCLE, _CIRCLE * 0.55),
    "hexagon": (_regular(6), None),
    "crescent": (_CIRCLE, _CIRCLE * 0.85 + [0.45, -0.1]),
    "arrow": (_ARROW, None),
    "half_disc": (_HALF_DISC, None),
}
_OUTLINE_SHAPES: dict[str, np.ndarray] = {
    "pentagon": _regular(5),
    "rhombus": _regular(4) * [0.55, 1.0],
    "ellipse": _CIRCLE * [1.0, 0.5],
    "star6": _star(6, 0.55),
    "l_shape": _L_SHAPE,
    "t_shape": _T_SHAPE,
    "trapezoid": _TRAPEZOID,
    "heart": _HEART,
}


def _render_filled_shape(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    outer, hole = list(_FILLED_SHAPES.values())[label]
    bg, fg = _pair(rng)
    back = _background(rng, size, bg)
    cv = _Canvas(back)
    cv.clutter(rng, bg)
    warp = _affine(rng, rot=40.0, scale=(0.4, 0.75), shift=0.25, shear=0.2)
    if rng.random() < 0.3:  # a small distractor disc in the foreground colour
        cv.disc(rng.uniform(-0.9, 0.9, 2), rng.uniform(0.05, 0.12), fg)
    cv.polygon(warp(outer), fg)
    if hole is not None:
        cv.polygon(warp(hole), back[size // 2, size // 2])
    return _finish(cv.result(), rng)


def _render_outline_shape(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    outer = list(_OUTLINE_SHAPES.values())[label]
    bg, fg = _pair(rng)
    cv = _Canvas(_background(rng, size, bg))
    cv.clutter(rng, bg)
    warp = _affine(rng, rot=40.0, scale=(0.45, 0.8), shift=0.25, shear=0.2)
    cv.outline(warp(outer), fg, rng.uniform(0.07, 0.17))
    return _finish(cv.result(), rng)


# ---------------------------------------------------------------------------------------------
# Scenes: two or three small objects in a spatial relation
# ---------------------------------------------------------------------------------------------

_OBJ = {"circle": _regular(24), "square": _regular(4, phase=np.pi / 4) * 1.25,
        "triangle": _regular(3) * 1.2 + [0, 0.2]}  # fmt: skip
_SCENES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("circle_left_of_square", ("circle", "square"), "h"),
    ("square_left_of_circle", ("square", "circle"), "h"),
    ("circle_above_square", ("circle", "square"), "v"),
    ("square_above_circle", ("square", "circle"), "v"),
    ("triangle_left_of_circle", ("triangle", "circle"), "h"),
    ("circle_left_of_triangle", ("circle", "triangle"), "h"),
    ("triangle_above_square", ("triangle", "square"), "v"),
    ("square_above_triangle", ("square", "triangle"), "v"),
    ("three_in_a_row", ("circle", "square", "triangle"), "row"),
    ("circle_inside_square", ("square", "circle"), "in"),
)


def _render_scene(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    _, objs, rel = _SCENES[label]
    bg, _ = _pair(rng)
    cv = _Canvas(_background(rng, size, bg))
    cv.clutter(rng, bg)
    r = rng.uniform(0.22, 0.32)
    centre = rng.uniform(-0.15, 0.15, 2)
    if rel == "in":
        offsets, radii = np.zeros((2, 2)), np.array([r * 1.8, r * 0.85])
    elif rel == "row":
        objs = tuple(rng.permutation(objs))
        d = rng.uniform(2.1, 2.6) * r
        offsets = np.array([[-d, 0.0], [0.0, 0.0], [d, 0.0]]) + rng.normal(0, 0.05, (3, 2))
        radii = np.full(3, r * 0.9)
        if rng.random() < 0.5:
            offsets = offsets[:, ::-1]
    else:
        d = rng.uniform(2.3, 3.4) * r / 2
        e = rng.uniform(-0.5, 0.5) * r
        offsets = np.array([[-d, -e], [d, e]])
        if rel == "v":
            offsets = offsets[:, ::-1]
        radii = r * rng.uniform(0.8, 1.15, 2)
    centre = np.clip(centre, -0.95 + np.abs(offsets).max() + r, 0.95 - np.abs(offsets).max() - r)
    for name, off, rad in zip(objs, offsets, radii, strict=True):
        a = rng.uniform(-0.5, 0.5)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        bg_l = float(bg @ _LUMA)
        fg = _tint(rng, bg_l + rng.uniform(0.3, 0.6) * (1 if bg_l < 0.5 else -1))
        cv.polygon(_OBJ[name] @ rot.T * rad + centre + off, fg)
    return _finish(cv.result(), rng)


# ---------------------------------------------------------------------------------------------
# Textures: gratings (source) and oriented band-pass noise (target)
# ---------------------------------------------------------------------------------------------

_GRATINGS = tuple((o, f) for f in (2.5, 5.0) for o in (0.0, 36.0, 72.0, 108.0, 144.0))


def _two_tone(rng: np.random.Generator, t: np.ndarray, gap: float = 0.25) -> np.ndarray:
    """Map a [0, 1] field to a random two-colour ramp."""
    bg, fg = _pair(rng, gap)
    return bg + t[..., None] * (fg - bg)


def _render_grating(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    orient, freq = _GRATINGS[label]
    yy, xx = _grid(size)
    a = np.deg2rad(orient + rng.uniform(-10.0, 10.0))
    f = freq * rng.uniform(0.8, 1.25) / 2.0  # cycles per unit length (image spans 2 units)
    # The phase is only partly random, so that raw pixels keep some class signal.
    phase = _TAU * f * (np.cos(a) * xx + np.sin(a) * yy) + rng.uniform(-0.6, 0.6) * np.pi
    wave = rng.integers(3)
    s = np.sin(phase)
    if wave == 1:
        s = np.tanh(4.0 * s)  # near-square wave
    elif wave == 2:
        s = 2.0 / np.pi * np.arcsin(s)  # triangle wave
    if rng.random() < 0.5:  # a weak distractor grating in another direction
        b = rng.uniform(0, _TAU)
        s = s + rng.uniform(0.15, 0.4) * np.sin(
            _TAU * rng.uniform(1.0, 3.0) * (np.cos(b) * xx + np.sin(b) * yy) + rng.uniform(0, 7)
        )
    env = 1.0 + rng.uniform(0.0, 0.6) * _smooth_noise(rng, size, 3, 1)[..., 0]
    t = np.clip(0.5 + 0.5 * s * env * rng.uniform(0.5, 1.0), 0.0, 1.0)
    return _finish(_two_tone(rng, t), rng)


@lru_cache(maxsize=16)
def _freqs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Radial frequency (cycles per image) and angle of an FFT grid."""
    f = np.fft.fftfreq(size) * size
    fy, fx = np.meshgrid(f, f, indexing="ij")
    return np.hypot(fx, fy), np.arctan2(fy, fx)


_NOISE_ORIENTATIONS = tuple(11.25 + 22.5 * k for k in range(8))


def _normalised(field_: np.ndarray) -> np.ndarray:
    field_ = field_ - field_.mean()
    return field_ / (field_.std() + 1e-8)


def _render_oriented_noise(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    orient = _NOISE_ORIENTATIONS[label]
    rad, ang = _freqs(size)
    f0 = rng.uniform(3.0, 9.0) * size / 32.0  # the centre frequency is a nuisance here
    # The spatial orientation of a grating is the angle of its frequency vector.
    th = np.deg2rad(orient + rng.uniform(-10.0, 10.0))
    aw = rng.uniform(0.25, 0.45)
    filt = np.exp(-0.5 * (np.log((rad + 1e-6) / f0) / 0.3) ** 2) * np.exp(
        -0.5 * (np.sin(ang - th) / aw) ** 2
    )
    noise = rng.normal(size=(size, size))
    field_ = np.real(np.fft.ifft2(np.fft.fft2(noise) * filt))
    t = 1.0 / (1.0 + np.exp(-rng.uniform(1.0, 2.5) * _normalised(field_)))
    return _finish(_two_tone(rng, t.astype(np.float32)), rng)


# ---------------------------------------------------------------------------------------------
# Colour blobs: class = palette of soft blobs (palettes overlap)
# ---------------------------------------------------------------------------------------------

_PALETTES: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("ember", (0, 30, 55)),
    ("rose", (0, 30, 320)),
    ("meadow", (55, 120, 170)),
    ("lagoon", (120, 170, 220)),
    ("dusk", (220, 275, 320)),
    ("berry", (0, 275, 320)),
    ("autumn", (30, 55, 120)),
    ("glacier", (170, 220, 275)),
    ("primary", (0, 120, 220)),
    ("opal", (55, 170, 275)),
)


def _palette_colours(rng: np.random.Generator, hues: np.ndarray, k: int) -> np.ndarray:
    """``k`` RGB colours drawn around a palette's hues (one off the palette a quarter of
    the time), with random saturation and value."""
    h = rng.choice(hues, k) + rng.normal(0.0, 8.0, k)
    if rng.random() < 0.25:
        h[0] = rng.uniform(0, 360)
    return _hsv(h % 360.0, rng.uniform(0.35, 1.0, k), rng.uniform(0.4, 1.0, k))

def _render_blobs(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    hues = np.array(_PALETTES[label][1], dtype=np.float32)
    yy, xx = _grid(size)
    bg = _background(rng, size, _tint(rng, rng.uniform(0.05, 0.95), (0.0, 0.3)))
    k = int(rng.integers(4, 8))
    cols = _palette_colours(rng, hues, k)
    centres = rng.uniform(-0.9, 0.9, (k, 2))
    sig = rng.uniform(0.12, 0.45, k)
    d2 = (yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2
    alpha = rng.uniform(0.6, 1.0, k)[:, None, None] * np.exp(-0.5 * d2 / sig[:, None, None] ** 2)
    img = bg
    for j in range(k):
        img = img + alpha[j, ..., None] * (cols[j] - img)
    return _finish(img.astype(np.float32), rng)


# ---------------------------------------------------------------------------------------------
# Curves: line structures
# ---------------------------------------------------------------------------------------------

_CURVES = ("parallel", "crossing", "grid", "zigzag", "spiral", "concentric", "wave", "radial",
           "arc", "figure_eight")  # fmt: skip


def _curve_strokes(kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    if kind == "parallel":
        n = int(rng.integers(3, 5))
        gap = rng.uniform(0.3, 0.5)
        ys = (np.arange(n) - (n - 1) / 2) * gap
        return [np.array([[-0.9, y], [0.9, y]]) for y in ys]
    if kind == "crossing":
        a = rng.uniform(50, 130) * np.pi / 180
        d = np.array([np.cos(a), np.sin(a)])
        return [np.array([[-0.9, 0.0], [0.9, 0.0]]), np.stack([-0.9 * d, 0.9 * d])]
    if kind == "grid":
        g = rng.uniform(0.25, 0.45)
        return [np.array([[-0.9, s * g], [0.9, s * g]]) for s in (-1, 1)] + [
            np.array([[s * g, -0.9], [s * g, 0.9]]) for s in (-1, 1)
        ]
    if kind == "zigzag":
        n = int(rng.integers(5, 8))
        x = np.linspace(-0.9, 0.9, n)
        return [np.stack([x, np.where(np.arange(n) % 2 == 0, -0.3, 0.3)], axis=1)]
    if kind == "spiral":
        t = np.linspace(0.0, rng.uniform(3.0, 4.5) * np.pi, 60)
        r = 0.9 * t / t[-1]
        return [np.stack([r * np.cos(t), r * np.sin(t)], axis=1)]
    if kind == "concentric":
        return [_regular(28, r) for r in (0.3, 0.6, 0.9)[: int(rng.integers(2, 4))]]
    if kind == "wave":
        x = np.linspace(-0.9, 0.9, 36)
        return [np.stack([x, 0.35 * np.sin(_TAU * rng.uniform(1.2, 2.2) * x / 1.8)], axis=1)]
    if kind == "radial":
        n = int(rng.integers(5, 9))
        return [np.stack([np.zeros(2), e]) for e in _regular(n, 0.9, rng.uniform(0, 1))]
    if kind == "arc":
        a0 = rng.uniform(0, _TAU)
        t = a0 + np.linspace(0, rng.uniform(0.6, 1.3) * np.pi, 24)
        return [np.stack([0.8 * np.cos(t), 0.8 * np.sin(t)], axis=1) + [0, 0.3]]
    t = np.linspace(0, _TAU, 48)
    return [np.stack([0.9 * np.sin(t), 0.9 * np.sin(t) * np.cos(t)], axis=1)]


def _render_curves(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    bg, fg = _pair(rng)
    cv = _Canvas(_background(rng, size, bg))
    cv.clutter(rng, bg)
    warp = _affine(rng, rot=30.0, scale=(0.6, 1.0), shift=0.15, shear=0.15)
    width = rng.uniform(0.06, 0.18)
    for s in _curve_strokes(_CURVES[label], rng):
        cv.line(warp(s + rng.normal(0.0, 0.03, s.shape)), fg, width)
    return _finish(cv.result(), rng)


# ---------------------------------------------------------------------------------------------
# Dots: class = count or arrangement of dots; markers: count of another kind of mark
# ---------------------------------------------------------------------------------------------

_DOTS = ("one", "two", "three", "four", "five", "row_of_four", "ring_of_six", "grid_of_nine",
         "triangle_of_three", "cluster")  # fmt: skip


def _scatter(rng: np.random.Generator, n: int, cells: int = 4, extent: float = 0.8) -> np.ndarray:
    """``n`` points, at most one per cell of a jittered cells x cells grid."""
    idx = rng.choice(cells * cells, n, replace=False)
    cell = 2.0 * extent / cells
    pos = np.stack([idx % cells, idx // cells], axis=1) + rng.uniform(0.2, 0.8, (n, 2))
    return pos * cell - extent


def _render_dots(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    bg, fg = _pair(rng)
    cv = _Canvas(_background(rng, size, bg))
    cv.clutter(rng, bg, p=0.4)
    r = rng.uniform(0.07, 0.15)
    kind = _DOTS[label]
    if label < 5:
        pts = _scatter(rng, label + 1)
    else:
        if kind == "row_of_four":
            pts = np.stack([np.linspace(-0.75, 0.75, 4), np.zeros(4)], axis=1)
        elif kind == "ring_of_six":
            pts = _regular(6, 0.7, rng.uniform(0, 1))
        elif kind == "grid_of_nine":
            g = np.linspace(-0.6, 0.6, 3)
            pts = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)
            r *= 0.8
        elif kind == "triangle_of_three":
            pts = _regular(3, 0.75)
        else:
            pts = rng.normal(0.0, 0.25, (int(rng.integers(7, 11)), 2))
            r *= 0.6
        pts = _affine(rng, rot=180.0, scale=(0.6, 1.1), shift=0.2, shear=0.1)(pts)
    for p in pts:
        cv.disc(p, r * rng.uniform(0.85, 1.15), fg)
    return _finish(cv.result(), rng)


_MARK_COUNTS = (1, 2, 3, 4, 5, 6, 8, 10)
_MARKERS = tuple(f"{n}_marks" for n in _MARK_COUNTS)


def _render_markers(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    bg, fg = _pair(rng)
    cv = _Canvas(np.broadcast_to(bg, (size, size, 3)))  # plain ground: counting is hard enough
    kind = rng.integers(3)
    r = rng.uniform(0.09, 0.12)
    for p in _scatter(rng, _MARK_COUNTS[label], cells=4, extent=0.85):
        a = rng.uniform(0, np.pi)
        if kind == 0:  # square
            cv.polygon(_regular(4, r * 1.3, a) + p, fg)
        elif kind == 1:  # plus sign
            cv.polygon(_cross(0.3) @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
                       * r * 1.3 + p, fg)  # fmt: skip
        else:  # triangle
            cv.polygon(_regular(3, r * 1.6, a) + p, fg)
    return _finish(cv.result(), rng)


# ---------------------------------------------------------------------------------------------
# Symmetry: a random motif drawn in a fundamental region, completed by the class's group
# ---------------------------------------------------------------------------------------------

_SYMMETRY = ("none", "mirror_vertical", "mirror_horizontal", "mirror_both", "rotation_2",
             "rotation_4", "dihedral_4", "mirror_diagonal", "translation", "glide")  # fmt: skip


def _motif(rng: np.random.Generator, h: int, w: int, palette: np.ndarray) -> np.ndarray:
    """A random motif on an (h, w) region: a few shapes biased towards its centre."""
    img = Image.new("RGB", (2 * w, 2 * h), _rgb(palette[0]))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 6))):
        col = _rgb(palette[int(rng.integers(1, len(palette)))])
        cx, cy = np.clip(rng.normal(0.5, 0.25, 2), 0.0, 1.0) * [2 * w, 2 * h]
        rx, ry = rng.uniform(0.08, 0.35, 2) * [2 * w, 2 * h]
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=col)
        elif kind == 1:
            draw.line([cx - rx, cy - ry, cx + rx, cy + ry], fill=col, width=int(1 + h / 8))
        else:
            draw.polygon([cx - rx, cy + ry, cx + rx, cy + ry, cx, cy - ry], fill=col)
    return np.asarray(img.reduce(2), dtype=np.float32) * (1.0 / 255.0)


def _render_symmetry(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    kind = _SYMMETRY[label]
    n = size + size % 2
    h = n // 2
    base = _tint(rng, rng.uniform(0.0, 1.0))
    palette = np.stack([base] + [_tint(rng, rng.uniform(0, 1)) for _ in range(3)])
    if kind in ("none", "mirror_diagonal"):
        img = _motif(rng, n, n, palette)
        if kind == "mirror_diagonal":
            op = np.maximum if rng.random() < 0.5 else np.minimum
            img = op(img, img.transpose(1, 0, 2))
    elif kind in ("mirror_vertical", "rotation_2", "glide"):
        left = _motif(rng, n, h, palette)
        right = {"mirror_vertical": left[:, ::-1], "rotation_2": left[::-1, ::-1],
                 "glide": left[::-1]}[kind]  # fmt: skip
        img = np.concatenate([left, right], axis=1)
    elif kind == "mirror_horizontal":
        top = _motif(rng, h, n, palette)
        img = np.concatenate([top, top[::-1]], axis=0)
    else:
        q = _motif(rng, h, h, palette)
        if kind == "dihedral_4":
            q = np.maximum(q, q.transpose(1, 0, 2))
        if kind == "rotation_4":
            tr, bl, br = np.rot90(q, -1), np.rot90(q, 1), np.rot90(q, 2)
        elif kind == "translation":
            tr = bl = br = q
        else:
            tr, bl, br = q[:, ::-1], q[::-1], q[::-1, ::-1]
        img = np.concatenate([np.concatenate([q, tr], 1), np.concatenate([bl, br], 1)], 0)
    img = np.roll(img, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))[:size, :size]
    return _finish(img, rng)


# ---------------------------------------------------------------------------------------------
# Far targets: spectral noise, cellular automata, pixel-art sprites, woven plaids
# ---------------------------------------------------------------------------------------------

_SLOPES = tuple(0.5 * k for k in range(8))


def _colour_map(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Map a [0, 1] field through a random three-colour ramp."""
    stops = np.stack([_tint(rng, lu) for lu in sorted(rng.uniform(0, 1, 3))])
    if rng.random() < 0.3:
        stops = stops[::-1]
    t2 = t[..., None] * 2.0
    lo = np.clip(t2, 0.0, 1.0)
    hi = np.clip(t2 - 1.0, 0.0, 1.0)
    return stops[0] + lo * (stops[1] - stops[0]) + hi * (stops[2] - stops[1])


def _render_spectral(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    beta = _SLOPES[label] + rng.uniform(-0.15, 0.15)
    rad, _ = _freqs(size)
    amp = np.where(rad > 0, np.maximum(rad, 1.0) ** -beta, 0.0)
    noise = rng.normal(size=(size, size))
    field_ = np.real(np.fft.ifft2(np.fft.fft2(noise) * amp))
    t = 1.0 / (1.0 + np.exp(-rng.uniform(1.0, 2.0) * _normalised(field_)))
    return _finish(_colour_map(rng, t.astype(np.float32)), rng)


_RULES = (30, 45, 73, 90, 110, 150, 184, 232)


def _render_automaton(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    rule = np.array([(_RULES[label] >> k) & 1 for k in range(8)], dtype=np.uint8)
    cell = int(rng.integers(1, 3)) * max(1, size // 32)
    n = -(-size // cell)
    row = (rng.random(n) < rng.uniform(0.15, 0.85)).astype(np.uint8)
    grid = np.empty((n, n), dtype=np.uint8)
    ext = np.empty(n + 2, dtype=np.uint8)  # the row with wrap-around neighbours
    burn_in = int(rng.integers(0, 8))
    for step in range(n + burn_in):
        ext[1:-1] = row
        ext[0], ext[-1] = row[-1], row[0]
        row = rule[(ext[:-2] << 2) | (ext[1:-1] << 1) | ext[2:]]
        if step >= burn_in:
            grid[step - burn_in] = row
    if rng.random() < 0.5:
        grid = grid[:, ::-1]
    if rng.random() < 0.5:
        grid = grid.T
    t = grid.repeat(cell, 0).repeat(cell, 1)[:size, :size].astype(np.float32)
    bg, fg = _pair(rng)
    img = _background(rng, size, bg)
    img = img + t[..., None] * (fg - img)
    return _finish(img, rng)


_SPRITES: dict[str, tuple[str, ...]] = {
    "invader": ("1......1", "..1..1..", "..1111..", ".121121.", "11111111", "1.1111.1",
                "1.1..1.1", "..1..1.."),
    "ghost": ("..1111..", ".111111.", "12211221", "12211221", "11111111", "11111111",
              "11111111", "1.11.11."),
    "mushroom": ("..1111..", ".112211.", "11222211", "11111111", "..2222..", "..2112..",
                 "..2222..", "...22..."),
    "sword": (".......1", "......12", ".....12.", "....12..", "1..12...", ".112....",
              ".21.....", "2..1...."),
    "key": (".111....", "1...1...", "1...1...", ".111....", "..1.....", "..11....",
            "..1.....", "..11...."),
    "house": ("...11...", "..1111..", ".111111.", "11111111", ".122221.", ".12..21.",
              ".12..21.", ".111111."),
    "tree": ("...11...", "..1111..", ".111111.", "..1111..", ".111111.", "11111111",
             "...22...", "...22..."),
    "cup": ("........", "1111111.", "12222121", "12222121", "1222211.", ".1111...",
            "..11....", "111111.."),
}  # fmt: skip
_SPRITE_MAPS = {k: np.array([[".12".index(ch) for ch in r] for r in v], dtype=np.int64)
                for k, v in _SPRITES.items()}  # fmt: skip


def _render_sprite(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    sprite = list(_SPRITE_MAPS.values())[label].copy()
    flips = rng.integers(0, 8, (int(rng.integers(2, 6)), 2))
    sprite[flips[:, 0], flips[:, 1]] = rng.integers(0, 3, len(flips))  # pixel mutations
    if rng.random() < 0.5:
        sprite = sprite[:, ::-1]
    block = int(rng.integers(max(1, size // 16), max(2, size // 16) * 2 - (size < 40) + 1))
    block = max(1, min(block, size // 9))
    big = sprite.repeat(block, 0).repeat(block, 1)
    bg, fg = _pair(rng)
    accent = _tint(rng, rng.uniform(0.0, 1.0))
    back = _background(rng, size, bg)
    cv = _Canvas(back)
    cv.clutter(rng, bg)
    img = cv.result()
    s = big.shape[0]
    y, x = rng.integers(0, size - s + 1, 2)
    region = img[y : y + s, x : x + s]
    region[big == 1] = fg
    region[big == 2] = accent
    return _finish(img, rng)


_WEAVES = ("plain", "basket", "twill", "satin", "herringbone", "rib", "houndstooth", "gingham")


def _weave_unit(kind: str) -> np.ndarray:
    """1 where the warp (vertical thread) is on top."""
    if kind in ("plain", "gingham"):
        return np.array([[1, 0], [0, 1]])
    if kind == "basket":
        return np.kron(np.array([[1, 0], [0, 1]]), np.ones((2, 2), dtype=int))
    if kind in ("twill", "houndstooth"):
        return np.array([[(r + c) % 4 < 2 for c in range(4)] for r in range(4)], dtype=int)
    if kind == "satin":
        return np.array([[(c - 2 * r) % 5 == 0 for c in range(5)] for r in range(5)], dtype=int)
    if kind == "herringbone":
        return np.array(
            [[((r + c) if c < 4 else (r - c)) % 4 < 2 for c in range(8)] for r in range(4)],
            dtype=int,
        )
    return np.array([[1], [0]])  # rib


_WEAVE_UNITS = {k: _weave_unit(k) for k in _WEAVES}


def _render_weave(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    kind = _WEAVES[label]
    unit = _WEAVE_UNITS[kind]
    yy, xx = _grid(size)
    a = rng.uniform(-0.35, 0.35) + (np.pi / 2 if rng.random() < 0.5 else 0.0)
    thread = rng.uniform(1.3, 2.6) * 2.0 / 32.0
    u = (np.cos(a) * xx + np.sin(a) * yy) / thread + rng.uniform(0, 50)
    v = (-np.sin(a) * xx + np.cos(a) * yy) / thread + rng.uniform(0, 50)
    col, row = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    on_top = unit[row % unit.shape[0], col % unit.shape[1]].astype(bool)
    c1, c2 = _pair(rng, 0.2)
    if kind == "houndstooth":
        warp_c = np.where((col // 4) % 2 == 0, 1.0, 0.0)
        weft_c = np.where((row // 4) % 2 == 0, 1.0, 0.0)
    elif kind == "gingham":
        w = int(rng.integers(2, 5))
        warp_c = np.where((col // w) % 2 == 0, 1.0, 0.0)
        weft_c = np.where((row // w) % 2 == 0, 1.0, 0.0)
        on_top = np.ones_like(on_top)  # gingham: the pattern is the overlap of colour stripes
        warp_c = 0.5 * (warp_c + weft_c)
    else:
        warp_c, weft_c = np.ones_like(u), np.zeros_like(u)
    t = np.where(on_top, warp_c, weft_c).astype(np.float32)
    # Thread shading: a soft ridge across each thread.
    frac = np.where(on_top, u - col, v - row)
    shade = 1.0 - rng.uniform(0.1, 0.35) * (2.0 * frac - 1.0) ** 2
    img = (c1 + t[..., None] * (c2 - c1)) * shade[..., None].astype(np.float32)
    return _finish(img, rng)


# ---------------------------------------------------------------------------------------------
# More near targets: new scene relations, striped palettes, dashed curves, rotation orders
# ---------------------------------------------------------------------------------------------

_OBJ2 = {"star": _star(5, 0.45) * 1.15, "hexagon": _regular(6) * 1.05}
_RELATIONS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("star_left_of_hexagon", ("star", "hexagon"), "h"),
    ("hexagon_left_of_star", ("hexagon", "star"), "h"),
    ("star_above_hexagon", ("star", "hexagon"), "v"),
    ("hexagon_above_star", ("hexagon", "star"), "v"),
    ("star_up_left_of_hexagon", ("star", "hexagon"), "diag"),
    ("star_inside_hexagon", ("hexagon", "star"), "in"),
    ("two_stars", ("star", "star"), "pair"),
    ("two_hexagons", ("hexagon", "hexagon"), "pair"),
)


def _render_relation(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    _, objs, rel = _RELATIONS[label]
    bg, _ = _pair(rng)
    cv = _Canvas(_background(rng, size, bg))
    cv.clutter(rng, bg)
    r = rng.uniform(0.2, 0.3)
    if rel == "in":
        offsets, radii = np.zeros((2, 2)), np.array([r * 1.9, r * 0.8])
    else:
        d = rng.uniform(2.2, 3.2) * r / 2
        e = rng.uniform(-0.4, 0.4) * r
        offsets = np.array([[-d, -e], [d, e]])
        if rel == "v" or (rel == "pair" and rng.random() < 0.5):
            offsets = offsets[:, ::-1]
        elif rel == "diag":
            offsets = np.array([[-d, -d], [d, d]]) * 0.8 + rng.normal(0, 0.04, (2, 2))
        radii = r * rng.uniform(0.8, 1.15, 2)
    lim = 0.95 - np.abs(offsets).max() - radii.max()
    centre = rng.uniform(-1.0, 1.0, 2) * max(lim, 0.0)
    bg_l = float(bg @ _LUMA)
    for name, off, rad in zip(objs, offsets, radii, strict=True):
        a = rng.uniform(-0.6, 0.6)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        fg = _tint(rng, bg_l + rng.uniform(0.3, 0.6) * (1 if bg_l < 0.5 else -1))
        cv.polygon(_OBJ2[name] @ rot.T * rad + centre + off, fg)
    return _finish(cv.result(), rng)


_STRIPE_PALETTES: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("sunset", (15, 40, 340)),
    ("forest", (40, 90, 140)),
    ("ocean", (190, 210, 240)),
    ("candy", (180, 300, 330)),
    ("citrus", (45, 75, 100)),
    ("violet", (250, 290, 310)),
    ("teal_coral", (10, 175)),
    ("tropical", (100, 190, 300)),
)


def _render_palette_stripes(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    hues = np.array(_STRIPE_PALETTES[label][1], dtype=np.float32)
    yy, xx = _grid(size)
    img = _background(rng, size, _tint(rng, rng.uniform(0.05, 0.95), (0.0, 0.3)))
    k = int(rng.integers(4, 9))
    cols = _palette_colours(rng, hues, k)
    a = rng.uniform(0, np.pi)
    u = np.cos(a) * xx + np.sin(a) * yy
    v = -np.sin(a) * xx + np.cos(a) * yy
    for j in range(k):  # hard-edged bands and rectangles instead of soft blobs
        c, w = rng.uniform(-1.0, 1.0), rng.uniform(0.06, 0.35)
        mask = np.abs(u - c) < w
        if rng.random() < 0.5:
            mask &= np.abs(v - rng.uniform(-1.0, 1.0)) < rng.uniform(0.2, 0.8)
        img = np.where(mask[..., None], cols[j], img)
    return _finish(img.astype(np.float32), rng)


_DASHED = ("square_spiral", "sawtooth", "pentagram", "lissajous", "loops", "branch", "hairpin",
           "double_wave")  # fmt: skip


def _dashed_strokes(kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    if kind == "square_spiral":
        steps = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], dtype=float)
        pts, p, n = [np.zeros(2)], np.zeros(2), int(rng.integers(6, 9))
        for j in range(n):
            p = p + steps[j % 4] * 0.13 * (j + 1)
            pts.append(p)
        pts = np.array(pts)
        return [pts - pts.mean(0)]
    if kind == "sawtooth":
        n = int(rng.integers(3, 5))
        x = np.repeat(np.linspace(-0.9, 0.9, n + 1), 2)[1:-1]
        y = np.tile([0.35, -0.35], n)
        return [np.stack([x, y], axis=1)]
    if kind == "pentagram":
        return [_regular(5, 0.9)[[0, 2, 4, 1, 3, 0]]]
    if kind == "lissajous":
        t = np.linspace(0, _TAU, 64)
        return [np.stack([0.85 * np.sin(3 * t + 0.5), 0.85 * np.sin(2 * t)], axis=1)]
    if kind == "loops":
        t = np.linspace(0, rng.uniform(3.0, 4.0) * _TAU, 90)
        x = t / t[-1] * 1.6 - 0.8 - 0.25 * np.sin(t)
        return [np.stack([x, -0.35 * np.cos(t)], axis=1)]
    if kind == "branch":
        a = rng.uniform(0.35, 0.7)
        top = np.array([0.0, -0.05])
        return [np.array([[0.0, 0.9], top]),
                np.stack([top, top + 0.9 * np.array([-np.sin(a), -np.cos(a)])]),
                np.stack([top, top + 0.9 * np.array([np.sin(a), -np.cos(a)])])]  # fmt: skip
    if kind == "hairpin":
        t = np.linspace(0, np.pi, 16)
        g = rng.uniform(0.25, 0.4)
        arc = np.stack([0.4 + g * np.sin(t), -g * np.cos(t)], axis=1)
        return [np.concatenate([[[-0.8, -g]], arc, [[-0.8, g]]])]
    x = np.linspace(-0.9, 0.9, 40)
    f = _TAU * rng.uniform(1.0, 1.6) * x / 1.8
    return [np.stack([x, 0.35 * np.sin(f)], axis=1), np.stack([x, -0.35 * np.sin(f)], axis=1)]


def _render_dashed_curves(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    bg, fg = _pair(rng)
    cv = _Canvas(_background(rng, size, bg))
    cv.clutter(rng, bg)
    warp = _affine(rng, rot=30.0, scale=(0.65, 1.0), shift=0.12, shear=0.15)
    width = rng.uniform(0.06, 0.14)
    on, off = int(rng.integers(2, 4)), int(rng.integers(1, 3))  # dash and gap, in steps
    dotted = rng.random() < 0.3
    for s in _dashed_strokes(_DASHED[label], rng):
        pts = _resample(warp(s + rng.normal(0.0, 0.02, s.shape)), rng.uniform(0.07, 0.1))
        if dotted:
            cv.discs(pts[:: on + off], width * 0.8, fg)
            continue
        for start in range(0, len(pts) - 1, on + off):
            cv.line(pts[start : start + on + 1], fg, width)
    return _finish(cv.result(), rng)


_ORDERS = ("rotation_3", "rotation_5", "rotation_6", "rotation_8", "dihedral_3", "dihedral_5",
           "dihedral_6", "dihedral_8")  # fmt: skip


def _render_rotation_order(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    kind, n = _ORDERS[label].split("_")
    n = int(n)
    bg, fg = _pair(rng)
    cv = _Canvas(_background(rng, size, bg))
    cv.clutter(rng, bg, p=0.4)
    length, w = rng.uniform(0.6, 0.9), rng.uniform(0.18, 0.3) * 4.0 / n ** 0.5
    if kind == "dihedral":  # a kite: mirror-symmetric about its own axis
        petal = np.array([[0.1, 0.0], [0.55, 0.5 * w], [1.0, 0.0], [0.55, -0.5 * w]]) * length
    else:  # a blade: all on one side, so the rosette is a pinwheel (no mirrors)
        petal = np.array([[0.1, 0.0], [1.0, 0.0], [0.5, w], [0.1, 0.3 * w]]) * length
        if rng.random() < 0.5:
            petal = petal * [1.0, -1.0]  # either turning sense
    # The first petal points about upwards: a random turn would leave raw pixels no signal.
    phase = -np.pi / 2 + rng.uniform(-0.25, 0.25) * _TAU / n
    centre = rng.uniform(-0.08, 0.08, 2)
    for j in range(n):
        a = phase + j * _TAU / n
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        cv.polygon(petal @ rot.T + centre, fg)
    if rng.random() < 0.5:
        cv.disc(centre, rng.uniform(0.08, 0.16), _tint(rng, rng.uniform(0, 1)))
    return _finish(cv.result(), rng)


# ---------------------------------------------------------------------------------------------
# More far targets: barcodes, seven-segment digits, clock hands, Voronoi cell counts
# ---------------------------------------------------------------------------------------------


def _codes(salt: str, n: int, bits: int = 11, min_dist: int = 4) -> np.ndarray:
    """``n`` fixed bar codes (1 = bar), pairwise at least ``min_dist`` bits apart."""
    rng = np.random.default_rng([_stable_id(salt), 2])
    out: list[np.ndarray] = []
    while len(out) < n:
        c = np.concatenate([[1], rng.integers(0, 2, bits - 2), [1]])
        if all(int((c != o).sum()) >= min_dist for o in out):
            out.append(c)
    return np.stack(out)


_BARCODES = _codes("barcodes", 8)


def _render_barcode(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    code = _BARCODES[label]
    yy, xx = _grid(size)
    a = rng.uniform(-0.2, 0.2)
    u = np.cos(a) * xx + np.sin(a) * yy - rng.uniform(-0.15, 0.15)
    v = -np.sin(a) * xx + np.cos(a) * yy - rng.uniform(-0.2, 0.2)
    span = rng.uniform(1.2, 1.8)
    idx = np.floor((u / span + 0.5) * len(code)).astype(np.int64)
    inside = (idx >= 0) & (idx < len(code)) & (np.abs(v) < rng.uniform(0.4, 0.8))
    bar = inside & (code[np.clip(idx, 0, len(code) - 1)] == 1)
    bg, fg = _pair(rng, 0.35)
    img = _background(rng, size, bg)
    img = np.where(bar[..., None], fg, img)
    return _finish(img.astype(np.float32), rng)


_SEGMENTS = np.array(
    [[[-0.5, -1], [0.5, -1]], [[0.5, -1], [0.5, 0]], [[0.5, 0], [0.5, 1]], [[-0.5, 1], [0.5, 1]],
     [[-0.5, 0], [-0.5, 1]], [[-0.5, -1], [-0.5, 0]], [[-0.5, 0], [0.5, 0]]], dtype=float,
)  # fmt: skip
_DIGITS = ("abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc")


def _render_segments(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    lit = {"abcdefg".index(ch) for ch in _DIGITS[label]}
    bg, fg = _pair(rng)
    cv = _Canvas(_background(rng, size, bg))
    cv.clutter(rng, bg, p=0.4)
    warp = _affine(rng, rot=8.0, scale=(0.5, 0.8), shift=0.2, shear=0.25)
    width = rng.uniform(0.1, 0.2)
    ghost = _unit(bg + rng.uniform(0.06, 0.15) * (fg - bg) / max(np.abs(fg - bg).max(), 1e-3))
    show_off = rng.random() < 0.5  # unlit segments faintly visible
    for k, seg in enumerate(_SEGMENTS):
        seg = seg + rng.normal(0.0, 0.03, seg.shape)
        shrunk = seg + 0.12 * (seg[::-1] - seg)  # gaps between segments
        if k in lit:
            cv.line(warp(shrunk), fg, width)
        elif show_off:
            cv.line(warp(shrunk), ghost, width)
    return _finish(cv.result(), rng)


_HAND_ANGLES = tuple(45 * k for k in range(8))


def _render_clock(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    bg, fg = _pair(rng)
    cv = _Canvas(_background(rng, size, bg))
    centre = rng.uniform(-0.1, 0.1, 2)
    rad = rng.uniform(0.7, 0.9)
    face = _tint(rng, float(bg @ _LUMA) + rng.uniform(-0.15, 0.15))
    cv.polygon(_CIRCLE * rad + centre, face)
    if rng.random() < 0.6:
        cv.outline(_CIRCLE * rad + centre, fg, rng.uniform(0.04, 0.08))
    for t in _regular(12, 1.0, 0.0):  # tick marks
        cv.line(np.stack([t * rad * 0.8, t * rad * 0.95]) + centre, fg, 0.05)
    # 0 degrees points up; the clock is never rotated, so the hand's direction is the class.
    a = np.deg2rad(_HAND_ANGLES[label] + rng.uniform(-8.0, 8.0))
    b = rng.uniform(0, _TAU)
    long_w = rng.uniform(0.1, 0.16)
    cv.line(np.stack([[0, 0], [np.sin(b), -np.cos(b)]]) * rad * 0.35 + centre, fg, long_w * 0.6)
    cv.line(np.stack([[0, 0], [np.sin(a), -np.cos(a)]]) * rad * 0.9 + centre, fg, long_w)
    return _finish(cv.result(), rng)


_CELL_COUNTS = (2, 3, 4, 6, 8, 11, 15, 20)


def _render_cells(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    n = _CELL_COUNTS[label]
    yy, xx = _grid(size)
    seeds = _scatter(rng, n, cells=5, extent=1.0)  # spread out: no cell too small to see
    d = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
    cell = d.argmin(0)
    lumas = rng.uniform(0.1, 0.9, n)  # cells of unrelated lightness
    cols = np.stack([_tint(rng, float(lu), (0.0, 0.6)) for lu in lumas])
    img = cols[cell]
    edge = np.zeros((size, size), dtype=bool)  # borders drawn one pixel wide
    edge[:-1] |= cell[:-1] != cell[1:]
    edge[:, :-1] |= cell[:, :-1] != cell[:, 1:]
    img = np.where(edge[..., None], _tint(rng, rng.choice([0.05, 0.95])), img)
    return _finish(img.astype(np.float32), rng)


# ---------------------------------------------------------------------------------------------
# Extra near targets: windowed patterns, blob counts, dot-lattice shapes
# ---------------------------------------------------------------------------------------------

_WINDOWS = ("rings", "spokes", "plaid", "checker", "spiral", "dot_lattice", "hatch", "bullseye_cut")


def _render_window(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    kind = _WINDOWS[label]
    yy, xx = _grid(size)
    c = rng.uniform(-0.15, 0.15, 2)
    y, x = yy - c[0], xx - c[1]
    a = rng.uniform(0, _TAU)
    u, v = np.cos(a) * x + np.sin(a) * y, -np.sin(a) * x + np.cos(a) * y
    r, th = np.hypot(x, y), np.arctan2(y, x)
    f = rng.uniform(2.5, 4.0) * np.pi  # radians per unit
    ph = rng.uniform(0, _TAU)
    if kind == "rings":
        s = np.sin(f * r + ph)
    elif kind == "spokes":
        s = np.sin(int(rng.integers(5, 9)) * th + ph)
    elif kind == "plaid":
        s = 0.5 * (np.sin(f * u + ph) + np.sin(f * v))
    elif kind == "checker":
        s = np.sign(np.sin(f * u + ph) * np.sin(f * v))
    elif kind == "spiral":
        s = np.sin(f * r + 3 * th + ph)
    elif kind == "dot_lattice":
        s = np.cos(f * u + ph) * np.cos(f * v) - 0.5
    elif kind == "hatch":
        s = np.maximum(np.sin(f * u + ph), np.sin(f * (0.5 * u + 0.87 * v)))
    else:  # rings cut by one straight grating
        s = np.where(u > 0, np.sin(f * r + ph), np.sin(f * v))
    s = np.tanh(rng.uniform(1.0, 4.0) * s)
    bg, fg = _pair(rng, 0.4)
    mid = 0.5 * (bg + fg)
    img = mid + 0.5 * s[..., None] * (fg - bg)
    rad = rng.uniform(0.55, 0.85)
    outside = _background(rng, size, _tint(rng, rng.uniform(0, 1)))
    img = np.where((r < rad)[..., None], img, outside)
    return _finish(img.astype(np.float32), rng)


def _render_blob_count(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    n = label + 1
    yy, xx = _grid(size)
    bg = _tint(rng, rng.uniform(0.05, 0.35))
    img = _background(rng, size, bg).copy()
    pts = _scatter(rng, n, cells=4, extent=0.8)
    for p in pts:
        s = rng.uniform(0.07, 0.1)
        w = np.exp(-((yy - p[0]) ** 2 + (xx - p[1]) ** 2) / (2 * s * s))[..., None]
        img = img + w * (_tint(rng, rng.uniform(0.75, 1.0)) - bg)
    return _finish(np.clip(img, 0.0, 1.0).astype(np.float32), rng)


_DOT_SHAPES: dict[str, np.ndarray] = {
    "house": np.array([[-0.7, 0.85], [0.7, 0.85], [0.7, -0.1], [0.0, -0.85], [-0.7, -0.1]]),
    "u_shape": np.array([[-0.8, -0.8], [-0.35, -0.8], [-0.35, 0.35], [0.35, 0.35], [0.35, -0.8],
                         [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]),
    "kite": np.array([[0.0, -0.95], [0.6, -0.35], [0.0, 0.95], [-0.6, -0.35]]),
    "hourglass": np.array([[-0.7, -0.9], [0.7, -0.9], [0.1, 0.0], [0.7, 0.9], [-0.7, 0.9],
                           [-0.1, 0.0]]),
    "octagon": _regular(8, 1.0, np.pi / 8),
    "chevron": np.array([[-0.9, -0.6], [0.0, 0.2], [0.9, -0.6], [0.9, 0.0], [0.0, 0.8],
                         [-0.9, 0.0]]),
    "parallelogram": np.array([[-0.4, -0.6], [0.95, -0.6], [0.4, 0.6], [-0.95, 0.6]]),
    "bowtie": np.array([[-0.9, -0.7], [0.0, -0.1], [0.9, -0.7], [0.9, 0.7], [0.0, 0.1],
                        [-0.9, 0.7]]),
}  # fmt: skip


def _inside(poly: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test for (n, 2) points (x, y)."""
    x, y = pts[:, 0:1], pts[:, 1:2]
    x0, y0 = poly[:, 0][None], poly[:, 1][None]
    x1, y1 = np.roll(poly[:, 0], -1)[None], np.roll(poly[:, 1], -1)[None]
    cross = ((y0 > y) != (y1 > y)) & (x < (x1 - x0) * (y - y0) / (y1 - y0 + 1e-12) + x0)
    return cross.sum(1) % 2 == 1


def _render_dot_shape(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    poly = list(_DOT_SHAPES.values())[label]
    bg, fg = _pair(rng)
    cv = _Canvas(_background(rng, size, bg))
    cv.clutter(rng, bg, p=0.3)
    warp = _affine(rng, rot=40.0, scale=(0.55, 0.85), shift=0.2, shear=0.15)
    step = rng.uniform(0.2, 0.26)
    k = np.arange(-1.0, 1.0 + 1e-6, step)
    lattice = np.stack(np.meshgrid(k, k), -1).reshape(-1, 2) + rng.uniform(0, step, 2)
    lattice = lattice[_inside(poly, lattice)] + rng.normal(0.0, 0.015, (1, 2))
    cv.discs(warp(lattice), step * rng.uniform(0.25, 0.35), fg)
    return _finish(cv.result(), rng)


# ---------------------------------------------------------------------------------------------
# Extra far targets: tally marks, bar-length ratios, Truchet tiles, angles, gradient directions
# ---------------------------------------------------------------------------------------------


_TALLIES = (1, 2, 3, 4, 5, 6, 7, 9)


def _render_tally(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    n = _TALLIES[label]
    bg, fg = _pair(rng)
    cv = _Canvas(_background(rng, size, bg))
    gap, h = rng.uniform(0.13, 0.17), rng.uniform(0.5, 0.8)
    width = rng.uniform(0.06, 0.1)
    groups = [5] * (n // 5) + ([n % 5] if n % 5 else [])
    total = sum(min(g, 4) for g in groups) * gap + (len(groups) - 1) * gap
    x = -total / 2 + rng.uniform(-0.1, 0.1)
    y0 = rng.uniform(-0.2, 0.2)
    for g in groups:
        start = x
        for _ in range(min(g, 4)):
            tilt = rng.normal(0.0, 0.03)
            cv.line(np.array([[x + tilt, y0 - h / 2], [x - tilt, y0 + h / 2]]), fg, width)
            x += gap
        if g == 5:  # the fifth mark strikes the other four
            cv.line(np.array([[start - gap * 0.5, y0 + h * 0.3],
                              [x - gap * 0.5, y0 - h * 0.3]]), fg, width)  # fmt: skip
        x += gap
    return _finish(cv.result(), rng)


_BAR_RATIOS = (0.3, 0.5, 0.7, 0.85, 1 / 0.85, 1 / 0.7, 1 / 0.5, 1 / 0.3)


def _render_bar_ratio(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    ratio = _BAR_RATIOS[label]
    bg, fg = _pair(rng)
    cv = _Canvas(_background(rng, size, bg))
    cv.clutter(rng, bg, p=0.3)
    longest = rng.uniform(1.1, 1.7)
    top, bottom = (longest * ratio, longest) if ratio < 1 else (longest, longest / ratio)
    width = rng.uniform(0.12, 0.2)
    gap = rng.uniform(0.35, 0.6)
    y = rng.uniform(-0.2, 0.2)
    left = rng.uniform(-0.9, 0.85 - longest)
    for length, yy in ((top, y - gap / 2), (bottom, y + gap / 2)):
        x0 = left + rng.uniform(-0.05, 0.05)  # left ends about aligned
        cv.line(np.array([[x0, yy], [x0 + length, yy]]), fg, width)
    return _finish(cv.result(), rng)


_TRUCHET = ("diagonal_random", "diagonal_regular", "arcs_random", "arcs_regular",
            "triangles_random", "triangles_regular", "halves_random", "halves_regular")  # fmt: skip


def _render_truchet(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    tile, order = _TRUCHET[label].split("_")
    n = int(rng.integers(4, 7))
    bg, fg = _pair(rng, 0.35)
    cv = _Canvas(_background(rng, size, bg))
    cell = 2.0 / n
    width = cell * rng.uniform(0.15, 0.25)
    arc = np.stack([np.cos(np.linspace(0, np.pi / 2, 7)), np.sin(np.linspace(0, np.pi / 2, 7))],
                   axis=1) * 0.5  # fmt: skip
    for i in range(n):
        for j in range(n):
            o = int(rng.integers(4)) if order == "random" else (i + j) % 2 * 2
            rot = np.array([[0, -1], [1, 0]]) if o % 2 else np.eye(2)
            rot = -rot if o >= 2 else rot
            c = np.array([-1.0 + (j + 0.5) * cell, -1.0 + (i + 0.5) * cell])
            if tile == "diagonal":
                shapes = [("line", np.array([[-0.5, -0.5], [0.5, 0.5]]))]
            elif tile == "arcs":
                shapes = [("line", arc - 0.5), ("line", 0.5 - arc)]
            elif tile == "triangles":
                shapes = [("poly", np.array([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5]]))]
            else:
                shapes = [("poly", np.array([[-0.5, -0.5], [0.0, -0.5], [0.0, 0.5], [-0.5, 0.5]]))]
            for kind, pts in shapes:
                p = pts @ rot.T * cell + c
                if kind == "line":
                    cv.line(p, fg, width)
                else:
                    cv.polygon(p, fg)
    return _finish(cv.result(), rng)


_ANGLES = (20, 40, 60, 80, 100, 120, 140, 160)


def _render_angle(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    opening = np.deg2rad(_ANGLES[label] + rng.uniform(-5.0, 5.0))
    bg, fg = _pair(rng)
    cv = _Canvas(_background(rng, size, bg))
    cv.clutter(rng, bg, p=0.4)
    # The opening faces about upwards: at any rotation raw features would see no signal.
    a0 = -np.pi / 2 - opening / 2 + np.deg2rad(rng.uniform(-25.0, 25.0))
    vertex = rng.uniform(-0.15, 0.15, 2) + [0.0, 0.45]
    width = rng.uniform(0.08, 0.14)
    for a, length in ((a0, rng.uniform(0.8, 1.1)), (a0 + opening, rng.uniform(0.8, 1.1))):
        cv.line(np.stack([vertex, vertex + length * np.array([np.cos(a), np.sin(a)])]), fg, width)
    return _finish(cv.result(), rng)


_GRADIENT_DIRS = tuple(45 * k for k in range(8))


def _render_gradient(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    a = np.deg2rad(_GRADIENT_DIRS[label] + rng.uniform(-15.0, 15.0))
    yy, xx = _grid(size)
    t = (np.cos(a) * xx - np.sin(a) * yy)[..., None] * 0.5 + 0.5  # 0 degrees: lighter rightwards
    lo, hi = _tint(rng, rng.uniform(0.0, 0.35)), _tint(rng, rng.uniform(0.65, 1.0))
    img = lo + t * (hi - lo)
    img = img + rng.uniform(0.05, 0.2) * _smooth_noise(rng, size, int(rng.integers(3, 7)))
    cv = _Canvas(_unit(img).astype(np.float32))
    for _ in range(int(rng.integers(2, 6))):  # distractor shapes in random flat colours
        cv.polygon(_regular(int(rng.integers(3, 7)), rng.uniform(0.1, 0.3), rng.uniform(0, _TAU))
                   + rng.uniform(-0.8, 0.8, 2), _tint(rng, rng.uniform(0, 1)))  # fmt: skip
    return _finish(cv.result(), rng)


# ---------------------------------------------------------------------------------------------
# Further targets: fine materials, dot lattices, object hues, stroke widths (near); blur
# kernels, region layouts, object positions, grey-level counts (far)
# ---------------------------------------------------------------------------------------------

_MATERIALS = ("sand", "brushed", "cracks", "pebbles", "knit", "bubbles", "wood", "crosshatch")


def _voronoi(rng: np.random.Generator, size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell index and distance to the nearest of ``n`` uniform seeds, per pixel."""
    yy, xx = _grid(size)
    seeds = rng.uniform(-1.1, 1.1, (n, 2))
    d = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
    return d.argmin(0), np.sqrt(d.min(0))


def _render_material(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    kind = _MATERIALS[label]
    yy, xx = _grid(size)
    a = rng.uniform(0, _TAU)
    u, v = np.cos(a) * xx + np.sin(a) * yy, -np.sin(a) * xx + np.cos(a) * yy
    s = np.zeros((size, size), dtype=np.float32)  # signed detail in about [-1, 1]
    if kind == "sand":
        s = rng.standard_normal((size, size)).astype(np.float32) * 0.6
    elif kind == "brushed":  # streaks: noise constant along one direction, fine across it
        streaks = rng.standard_normal(4 * size)
        s = streaks[((v + 1.5) * size * rng.uniform(0.8, 1.2)).astype(int) % (4 * size)] * 0.6
        s = s + 0.15 * rng.standard_normal((size, size))
    elif kind in ("cracks", "pebbles"):
        cell, dist = _voronoi(rng, size, int(rng.integers(25, 45)))
        edge = np.zeros((size, size), dtype=bool)
        edge[:-1] |= cell[:-1] != cell[1:]
        edge[:, :-1] |= cell[:, :-1] != cell[:, 1:]
        if kind == "cracks":  # a flat ground broken by thin lines
            s = np.where(edge, -1.0, 0.1 * rng.standard_normal((size, size)))
        else:  # rounded stones of varying lightness, darker at their rims
            s = rng.uniform(-0.5, 0.5, cell.max() + 1)[cell] + 0.6 - 4.0 * dist
    elif kind == "knit":  # rows of small chevrons
        p = rng.uniform(0.12, 0.18)
        s = np.sin(_TAU * (v + np.abs((u / p) % 1.0 - 0.5) * p) / p)
    elif kind == "bubbles":
        cv = _Canvas(np.zeros((size, size, 3), dtype=np.float32))
        for _ in range(int(rng.integers(12, 22))):
            cv.outline(_regular(12, rng.uniform(0.06, 0.14)) + rng.uniform(-1.0, 1.0, 2),
                       np.ones(3), 0.05)
        s = cv.result()[..., 0] * 1.6 - 0.5
    elif kind == "wood":  # wavy, nearly parallel growth rings
        f = rng.uniform(5.0, 8.0) * np.pi
        warp = 0.12 * _smooth_noise(rng, size, 4, 1)[..., 0]
        s = np.sin(f * (v + 0.15 * u * u + warp))
        s = np.sign(s) * np.abs(s) ** 0.5
    else:  # short strokes in two crossing directions
        cv = _Canvas(np.zeros((size, size, 3), dtype=np.float32))
        for j in range(int(rng.integers(30, 45))):
            b = a + (np.pi / 2 if j % 2 else 0.0) + rng.normal(0.0, 0.1)
            d = 0.12 * np.array([np.cos(b), np.sin(b)])
            c = rng.uniform(-1.0, 1.0, 2)
            cv.line(np.stack([c - d, c + d]), np.ones(3), 0.05)
        s = cv.result()[..., 0] * 1.6 - 0.5
    base, ink = _pair(rng, 0.25)
    shade = 1.0 + rng.uniform(0.0, 0.25) * _smooth_noise(rng, size, 3, 1)
    img = (0.5 * (base + ink) + 0.5 * np.clip(s, -1.0, 1.0)[..., None] * (ink - base)) * shade
    return _finish(img.astype(np.float32), rng)


_LATTICES = ("square", "hexagonal", "rows", "brick", "honeycomb", "kagome", "centred_square",
             "random")  # fmt: skip


def _lattice_points(kind: str, rng: np.random.Generator, step: float) -> np.ndarray:
    """Points of lattice ``kind`` (spacing about ``step``) covering [-1.5, 1.5]^2."""
    k = np.arange(-12, 13)
    i, j = (g.ravel().astype(np.float64) for g in np.meshgrid(k, k))
    h = np.sqrt(3.0) / 2.0
    if kind == "square":
        pts = np.stack([i, j], 1)
    elif kind == "rows":  # dense along rows, far apart across them
        pts = np.stack([0.7 * i, 1.8 * j], 1)
    elif kind == "brick":
        pts = np.stack([i + 0.5 * (j % 2), 1.4 * j], 1)
    elif kind in ("hexagonal", "honeycomb", "kagome"):
        pts = np.stack([i + 0.5 * j, h * j], 1)
        if kind == "honeycomb":  # a hexagonal lattice with every third point removed
            pts = pts[(i - j) % 3 != 0]
        elif kind == "kagome":
            pts = pts[(i % 2 == 0) | (j % 2 == 0)]
    elif kind == "centred_square":
        pts = np.concatenate([np.stack([i, j], 1), np.stack([i + 0.5, j + 0.5], 1)]) / 1.3
    else:  # the same density, no order
        pts = rng.uniform(-12.0, 12.0, (len(i), 2))
    return pts * step


def _render_lattice(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    step = rng.uniform(0.24, 0.32)
    pts = _lattice_points(_LATTICES[label], rng, step)
    a = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = pts @ rot.T + rng.uniform(-step, step, 2)
    pts = pts[np.abs(pts).max(1) < 1.1] + rng.normal(0.0, 0.012, (1, 2))
    bg, fg = _pair(rng)
    cv = _Canvas(_background(rng, size, bg))
    cv.discs(pts, step * rng.uniform(0.22, 0.3), fg)
    return _finish(cv.result(), rng)


_HUES = (("red", 0), ("orange", 30), ("yellow", 58), ("green", 120), ("cyan", 180),
         ("blue", 228), ("violet", 275), ("magenta", 320))  # fmt: skip


def _render_hue(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    hue = (_HUES[label][1] + rng.uniform(-10.0, 10.0)) % 360.0
    grey = rng.uniform(0.15, 0.85)
    cv = _Canvas(_background(rng, size, _tint(rng, grey, (0.0, 0.15))))
    for _ in range(int(rng.integers(2, 5))):  # grey distractors of every lightness
        cv.polygon(_regular(int(rng.integers(3, 8)), rng.uniform(0.15, 0.35), rng.uniform(0, 6))
                   + rng.uniform(-0.8, 0.8, 2), _tint(rng, rng.uniform(0, 1), (0.0, 0.1)))
    obj = _regular(int(rng.integers(3, 9)), rng.uniform(0.2, 0.4), rng.uniform(0, 6))
    cv.polygon(obj + rng.uniform(-0.5, 0.5, 2),
               _hsv(np.float32(hue), np.float32(rng.uniform(0.45, 1.0)),
                    np.float32(rng.uniform(0.45, 1.0))))  # fmt: skip
    cast = 1.0 + rng.uniform(-0.12, 0.12, 3).astype(np.float32)  # white balance off
    return _finish(_unit(cv.result() * cast), rng)


_WIDTHS = (0.04, 0.07, 0.11, 0.16, 0.22, 0.3, 0.4, 0.52)


def _render_stroke_width(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    width = _WIDTHS[label] * rng.uniform(0.95, 1.05)
    bg, fg = _pair(rng, 0.4)
    cv = _Canvas(np.broadcast_to(bg, (size, size, 3)))  # plain ground: widths are subtle
    for _ in range(int(rng.integers(2, 4))):  # gently bent strokes across the image
        ends = _regular(2, rng.uniform(0.6, 0.9), rng.uniform(0, np.pi)) + rng.uniform(-0.3, 0.3, 2)
        bend = rng.normal(0.0, 0.25, 2)
        cv.line(_bernstein(3, 16) @ np.stack([ends[0], ends.mean(0) + bend, ends[1]]), fg, width)
    return _finish(cv.result(), rng)


_BLURS = ("sharp", "motion_horizontal", "motion_vertical", "motion_diagonal", "gaussian",
          "defocus", "sharpened", "pixelated")  # fmt: skip


def _filter(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``img`` (H, W, 3) convolved with a small odd-sized kernel, edges replicated."""
    r = kernel.shape[0] // 2
    pad = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
    out = np.zeros_like(img)
    h, w = img.shape[:2]
    for dy, dx in zip(*np.nonzero(kernel), strict=True):
        out += kernel[dy, dx] * pad[dy : dy + h, dx : dx + w]
    return out


def _render_blur(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    kind = _BLURS[label]
    bg, _ = _pair(rng)
    cv = _Canvas(_background(rng, size, bg))
    for _ in range(int(rng.integers(3, 7))):  # a scene with edges in every direction
        col = _tint(rng, rng.uniform(0, 1))
        if rng.random() < 0.5:
            cv.polygon(_regular(int(rng.integers(3, 7)), rng.uniform(0.15, 0.4),
                                rng.uniform(0, 6)) + rng.uniform(-0.8, 0.8, 2), col)
        else:
            cv.line(rng.uniform(-1.0, 1.0, (2, 2)), col, rng.uniform(0.05, 0.12))
    img = cv.result()
    n = 2 * int(rng.integers(3, 5)) + 1  # kernel size 7 or 9
    k = np.zeros((n, n), dtype=np.float32)
    if kind.startswith("motion"):
        idx = np.arange(n)
        if kind == "motion_horizontal":
            k[n // 2] = 1.0
        elif kind == "motion_vertical":
            k[:, n // 2] = 1.0
        else:
            k[idx, idx if rng.random() < 0.5 else n - 1 - idx] = 1.0
    elif kind in ("gaussian", "defocus"):
        t = np.arange(n) - n // 2
        d2 = t[:, None] ** 2 + t[None] ** 2
        k = np.exp(-d2 / (2 * rng.uniform(1.3, 1.8) ** 2)) if kind == "gaussian" else (
            d2 <= (n // 2 - 0.5) ** 2).astype(np.float32)
    if kind == "sharpened":
        blur = _filter(img, np.full((3, 3), 1.0 / 9.0, dtype=np.float32))
        img = img + rng.uniform(2.0, 3.0) * (img - blur)
    elif kind == "pixelated":
        f = int(rng.integers(3, 5))
        img = np.repeat(np.repeat(img[::f, ::f], f, 0), f, 1)[:size, :size]
    elif kind != "sharp":
        img = _filter(img, (k / k.sum()).astype(np.float32))
    return _finish(_unit(img).astype(np.float32), rng)


_LAYOUTS = ("horizon_high", "horizon_low", "vertical_split", "diagonal", "centre_square",
            "frame", "corner", "middle_band")  # fmt: skip


def _render_layout(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    kind = _LAYOUTS[label]
    yy, xx = _grid(size)
    a = np.deg2rad(rng.uniform(-10.0, 10.0))
    y = np.cos(a) * yy + np.sin(a) * xx + 0.15 * _smooth_noise(rng, size, 4, 1)[..., 0]
    x = np.cos(a) * xx - np.sin(a) * yy
    if rng.random() < 0.5:
        x = -x  # mirrored: left and right carry no signal
    j = rng.uniform(-0.12, 0.12)
    if kind == "horizon_high":
        inside = y < -0.4 + j
    elif kind == "horizon_low":
        inside = y > 0.4 + j
    elif kind == "vertical_split":
        inside = x < j
    elif kind == "diagonal":
        inside = x + y * (1 if rng.random() < 0.5 else -1) < j
    elif kind == "centre_square":
        inside = np.maximum(np.abs(x), np.abs(y)) < 0.45 + j
    elif kind == "frame":
        inside = np.maximum(np.abs(x), np.abs(y)) > 0.65 + j
    elif kind == "corner":
        inside = (x < -0.1 + j) & (y * (1 if rng.random() < 0.5 else -1) < -0.1 + j)
    else:
        inside = np.abs(y - j) < 0.3
    one, two = _pair(rng, 0.2)
    if rng.random() < 0.5:
        one, two = two, one  # either region may be the lighter one
    img = np.where(inside[..., None], _background(rng, size, one), _background(rng, size, two))
    cv = _Canvas(img.astype(np.float32))
    cv.clutter(rng, one, p=0.5)
    return _finish(cv.result(), rng)


_POSITIONS = ("top_left", "top", "top_right", "left", "right", "bottom_left", "bottom",
              "bottom_right")  # fmt: skip


def _render_position(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    cell = (0, 1, 2, 3, 5, 6, 7, 8)[label]  # a 3 x 3 grid without its centre
    centre = np.array([cell % 3 - 1, cell // 3 - 1]) * 0.55 + rng.uniform(-0.2, 0.2, 2)
    bg, fg = _pair(rng, 0.15)
    cv = _Canvas(_background(rng, size, bg))
    cv.clutter(rng, bg, p=1.0)
    for _ in range(int(rng.integers(1, 4))):  # thin lines anywhere, in any colour
        cv.line(rng.uniform(-1.0, 1.0, (2, 2)), _tint(rng, rng.uniform(0, 1)), 0.04)
    shape = _regular(int(rng.integers(3, 9)), rng.uniform(0.12, 0.22), rng.uniform(0, 6))
    cv.polygon(shape + centre, fg)
    return _finish(cv.result(), rng)


_LEVELS = (2, 3, 4, 5, 6, 8, 10, 0)


def _render_levels(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    levels = _LEVELS[label]
    t = _smooth_noise(rng, size, int(rng.integers(3, 6)), 1)[..., 0]
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    if levels:  # posterised: that many flat bands of lightness
        t = np.minimum(np.floor(t * levels), levels - 1) / (levels - 1)
    lo, hi = _tint(rng, rng.uniform(0.0, 0.15)), _tint(rng, rng.uniform(0.85, 1.0))
    img = lo + t[..., None] * (hi - lo)
    img = img + rng.uniform(0.0, 0.02) * rng.standard_normal(img.shape)  # less noise than
    return (_unit(img) * 255.0 + 0.5).astype(np.uint8)  # _finish: it would fill the gaps


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

SOURCE_DOMAINS: tuple[Domain, ...] = (
    Domain("glyphs", "source", tuple(f"glyph_{k:02d}" for k in range(10)),
           "Stroke-drawn symbols: fixed per-class stroke skeletons, jittered and warped.",
           _renderer=_glyph_renderer("glyphs", 10, beaded=False)),
    Domain("shapes", "source", tuple(_FILLED_SHAPES),
           "Filled geometric shapes at random pose, scale and colour over cluttered grounds.",
           _renderer=_render_filled_shape),
    Domain("textures", "source", tuple(f"grating_{int(o)}deg_{'low' if f < 3 else 'high'}"
                                       for o, f in _GRATINGS),
           "Gratings (sine, square, triangle waves); class = orientation x frequency.",
           _renderer=_render_grating),
    Domain("scenes", "source", tuple(s[0] for s in _SCENES),
           "Two or three small objects; class = which objects and their spatial relation.",
           _renderer=_render_scene),
    Domain("blobs", "source", tuple(p[0] for p in _PALETTES),
           "Soft colour blobs; class = the (partly shared) palette they are drawn from.",
           _renderer=_render_blobs),
    Domain("curves", "source", _CURVES,
           "Line structures: parallel, crossing, grid, zigzag, spiral, waves, ...",
           _renderer=_render_curves),
    Domain("dots", "source", _DOTS,
           "Dot patterns; class = number of scattered dots or their arrangement.",
           _renderer=_render_dots),
    Domain("symmetry", "source", _SYMMETRY,
           "Random motifs completed by a symmetry group; class = the group.",
           _renderer=_render_symmetry),
)  # fmt: skip

TARGET_TASKS: tuple[Domain, ...] = (
    Domain("beaded_glyphs", "target", tuple(f"bead_glyph_{k}" for k in range(8)),
           "New glyph classes drawn as beaded (dotted) strokes.", near="glyphs",
           _renderer=_glyph_renderer("beaded_glyphs", 8, beaded=True)),
    Domain("outline_shapes", "target", tuple(_OUTLINE_SHAPES),
           "New geometric shapes drawn as outlines.", near="shapes",
           _renderer=_render_outline_shape),
    Domain("oriented_noise", "target", tuple(f"noise_{o:g}deg" for o in _NOISE_ORIENTATIONS),
           "Band-pass noise at 8 finer orientations, random frequency.", near="textures",
           _renderer=_render_oriented_noise),
    Domain("marker_count", "target", _MARKERS,
           "Count (1-10) of squares, plus signs or triangles on a plain ground.", near="dots",
           _renderer=_render_markers),
    Domain("spectral_noise", "target", tuple(f"slope_{b:g}" for b in _SLOPES),
           "Colour-mapped noise fields; class = slope of the amplitude spectrum.",
           _renderer=_render_spectral),
    Domain("automata", "target", tuple(f"rule_{r}" for r in _RULES),
           "Space-time diagrams of elementary cellular automata; class = rule.",
           _renderer=_render_automaton),
    Domain("sprites", "target", tuple(_SPRITES),
           "Pixel-art sprites with random palettes, scale, position and pixel errors.",
           _renderer=_render_sprite),
    Domain("weaves", "target", _WEAVES,
           "Woven cloth; class = weave structure or colour pattern (twill, satin, gingham...).",
           _renderer=_render_weave),
)  # fmt: skip

MORE_TARGET_TASKS: tuple[Domain, ...] = (
    Domain("scene_relations", "target", tuple(s[0] for s in _RELATIONS),
           "Stars and hexagons; class = their relation (side by side, diagonal, inside, pair).",
           near="scenes", _renderer=_render_relation),
    Domain("palette_stripes", "target", tuple(p[0] for p in _STRIPE_PALETTES),
           "Hard-edged colour bands and bars; class = the palette they are drawn from.",
           near="blobs", _renderer=_render_palette_stripes),
    Domain("dashed_curves", "target", _DASHED,
           "New line structures (square spiral, pentagram, Lissajous...) drawn dashed or dotted.",
           near="curves", _renderer=_render_dashed_curves),
    Domain("rotation_orders", "target", _ORDERS,
           "Rosettes of kites or pinwheel blades; class = rotation order, with or without "
           "mirrors.", near="symmetry", _renderer=_render_rotation_order),
    Domain("barcodes", "target", tuple(f"code_{k}" for k in range(8)),
           "One-dimensional bar codes at random scale, tilt and colour; class = the code.",
           _renderer=_render_barcode),
    Domain("segment_digits", "target", tuple(f"digit_{k}" for k in range(8)),
           "Seven-segment digits 0-7, slanted, with faintly visible unlit segments.",
           _renderer=_render_segments),
    Domain("clock_hands", "target", tuple(f"hand_{a}deg" for a in _HAND_ANGLES),
           "Clock faces; class = direction of the long hand (the short one is random).",
           _renderer=_render_clock),
    Domain("cell_counts", "target", tuple(f"{n}_cells" for n in _CELL_COUNTS),
           "Voronoi mosaics; class = number of cells.", _renderer=_render_cells),
)  # fmt: skip
"""Eight more target tasks (four near, four far) for the larger ``diverse`` build; kept apart
from ``TARGET_TASKS`` so that builds whose profile names no targets stay as they were."""

EXTRA_TARGET_TASKS: tuple[Domain, ...] = (
    Domain("window_patterns", "target", _WINDOWS,
           "Periodic patterns (rings, spokes, plaid, checker...) seen through a round window.",
           near="textures", _renderer=_render_window),
    Domain("blob_counts", "target", tuple(f"{n}_blobs" for n in range(1, 9)),
           "Soft light blobs on a dark ground; class = how many (1-8).", near="blobs",
           _renderer=_render_blob_count),
    Domain("dot_shapes", "target", tuple(_DOT_SHAPES),
           "New shapes (house, kite, hourglass...) filled with a lattice of dots.",
           near="shapes", _renderer=_render_dot_shape),
    Domain("tally_marks", "target", tuple(f"tally_{n}" for n in _TALLIES),
           "Tally marks, fives struck through; class = the count.", near="dots",
           _renderer=_render_tally),
    Domain("bar_ratios", "target", tuple(f"ratio_{r:.2f}" for r in _BAR_RATIOS),
           "Two parallel bars, left ends aligned; class = top length over bottom length.",
           _renderer=_render_bar_ratio),
    Domain("truchet_tiles", "target", _TRUCHET,
           "Truchet tilings; class = tile (diagonal, arcs, triangles, halves) x random or "
           "regular turns.", _renderer=_render_truchet),
    Domain("angle_sizes", "target", tuple(f"angle_{a}deg" for a in _ANGLES),
           "Two rays from a vertex, opening about upwards; class = the angle between them.",
           _renderer=_render_angle),
    Domain("gradient_directions", "target", tuple(f"lighter_{a}deg" for a in _GRADIENT_DIRS),
           "Colour ramps under noise and distractor shapes; class = direction of lightening.",
           _renderer=_render_gradient),
)  # fmt: skip
"""Eight further target tasks (four near, four far), appended to the ``diverse`` build's
targets after ``MORE_TARGET_TASKS``."""

FURTHER_TARGET_TASKS: tuple[Domain, ...] = (
    Domain("materials", "target", _MATERIALS,
           "Fine material textures (sand, brushed metal, cracks, pebbles, knit, wood...).",
           near="textures", _renderer=_render_material),
    Domain("dot_lattices", "target", _LATTICES,
           "Dots on a lattice at random turn and spacing; class = the lattice (square, "
           "hexagonal, brick, kagome...).", near="dots", _renderer=_render_lattice),
    Domain("object_hues", "target", tuple(h[0] for h in _HUES),
           "One coloured shape among grey ones, under a colour cast; class = its hue.",
           near="blobs", _renderer=_render_hue),
    Domain("stroke_widths", "target", tuple(f"width_{w:g}" for w in _WIDTHS),
           "Smooth random curves; class = the width they are drawn with.", near="curves",
           _renderer=_render_stroke_width),
    Domain("blur_kernels", "target", _BLURS,
           "Scenes of shapes and lines; class = how the image was filtered (motion blur "
           "direction, Gaussian, defocus, sharpened, pixelated).", _renderer=_render_blur),
    Domain("region_layouts", "target", _LAYOUTS,
           "Two textured regions in random colours; class = the layout of their border "
           "(horizon, split, frame, corner...).", _renderer=_render_layout),
    Domain("object_positions", "target", _POSITIONS,
           "One small shape on a cluttered ground; class = where it is (3 x 3 grid, no "
           "centre).", _renderer=_render_position),
    Domain("grey_levels", "target", tuple(f"{n}_levels" if n else "continuous" for n in _LEVELS),
           "Smooth colour ramps, posterised; class = how many lightness levels.",
           _renderer=_render_levels),
)  # fmt: skip
"""Eight further target tasks (four near, four far) with cues the other 24 lack (fine
texture, lattice order, hue, stroke width, filtering, layout, position, quantisation),
appended to the ``diverse`` build's targets after ``EXTRA_TARGET_TASKS``."""

_ALL: dict[str, Domain] = {
    d.name: d
    for d in SOURCE_DOMAINS + TARGET_TASKS + MORE_TARGET_TASKS + EXTRA_TARGET_TASKS
    + FURTHER_TARGET_TASKS
}


def get_domain(name: str) -> Domain:
    """The source domain or target task called ``name``."""
    try:
        return _ALL[name]
    except KeyError:
        raise UnknownNameError("bench domain", name, list(_ALL)) from None


def generate(
    domain: Domain, per_class: int, *, size: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of every class, ordered by class then index.

    Image ``i`` of class ``c`` depends only on ``(domain, c, i, seed, size)``.
    """
    if per_class < 0:
        raise ValueError(f"per_class must be >= 0, got {per_class}")
    n_cls = len(domain.classes)
    images = np.empty((n_cls * per_class, size, size, 3), dtype=np.uint8)
    did = _stable_id(domain.name)
    seed_word = int(seed) % 2**64
    for c in range(n_cls):
        for i in range(per_class):
            rng = np.random.default_rng([seed_word, did, c, i])
            images[c * per_class + i] = domain.render(c, rng, size)
    labels = np.repeat(np.arange(n_cls, dtype=np.int64), per_class)
    return images, labels


def _folder_name(index: int, name: str) -> str:
    # zoosel's image-folder loader sorts class folders by name: the index prefix keeps the
    # label order, the substitution keeps the name safe on every file system.
    return f"{index:02d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('.') or 'class'}"


def write_image_folder(
    images: np.ndarray, labels: np.ndarray, classes: Sequence[str], path: str | Path
) -> Path:
    """Write ``images`` as PNGs into ``path/<NN_class>/00000.png``; return ``path``.

    Folder names are prefixed by the class index so that sorting them (as zoosel's loader
    does) gives back the label order.
    """
    root = Path(path)
    labels = np.asarray(labels)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    dirs = [root / _folder_name(k, c) for k, c in enumerate(classes)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    counters = [0] * len(classes)
    for img, lab in zip(images, labels, strict=True):
        k = int(lab)
        Image.fromarray(np.ascontiguousarray(img), "RGB").save(dirs[k] / f"{counters[k]:05d}.png")
        counters[k] += 1
    return root
