"""Small drawn images of 12 shapes and patterns, the classes of the `demo` dataset.

Each image is drawn at 2x resolution from a coordinate grid and averaged down (cheap anti-aliasing), with
jitter of position, size, rotation, colours and a little noise. All randomness comes from the
`numpy.random.Generator` passed in, never from a global RNG (the few-shot sampler draws from Python's
global `random`, which must stay untouched).
"""
from typing import Callable, Dict

import numpy as np

Mask = Callable[[np.ndarray, np.ndarray, np.ndarray, float, np.random.Generator], np.ndarray]


def _circle(x, y, r, size, rng):
    return r < size


def _ring(x, y, r, size, rng):
    return (r < size) & (r > size * 0.6)


def _square(x, y, r, size, rng):
    return np.maximum(np.abs(x), np.abs(y)) < size * 0.8


def _diamond(x, y, r, size, rng):
    return np.abs(x) + np.abs(y) < size


def _triangle(x, y, r, size, rng):
    # Apex up: inside the base line and the two slanted edges.
    return (y < size * 0.6) & (2 * np.abs(x) < y + size)


def _star(x, y, r, size, rng):
    angle = np.arctan2(y, x)
    outline = size * (0.45 + 0.55 * np.abs(np.cos(2.5 * angle)) ** 3)
    return r < outline


def _cross(x, y, r, size, rng):
    arm = size * 0.3
    return ((np.abs(x) < arm) & (np.abs(y) < size)) | ((np.abs(y) < arm) & (np.abs(x) < size))


def _stripes(u, rng):
    period = rng.uniform(5.0, 8.0)
    return np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi)) > 0


def _horizontal_stripes(x, y, r, size, rng):
    return _stripes(y, rng)


def _vertical_stripes(x, y, r, size, rng):
    return _stripes(x, rng)


def _diagonal_stripes(x, y, r, size, rng):
    return _stripes((x + y) / np.sqrt(2), rng)


def _checkerboard(x, y, r, size, rng):
    cell = rng.uniform(4.0, 7.0)
    return (np.floor(x / cell) + np.floor(y / cell)) % 2 == 0


def _dots(x, y, r, size, rng):
    pitch = rng.uniform(7.0, 10.0)
    u, v = np.mod(x, pitch) - pitch / 2, np.mod(y, pitch) - pitch / 2
    return u * u + v * v < (pitch * 0.28) ** 2


# Class name -> mask function, in label order: base classes (the first half of the labels) and new classes
# each mix outlined shapes and full-image patterns.
SHAPES: Dict[str, Mask] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "horizontal stripes": _horizontal_stripes,
    "checkerboard": _checkerboard,
    "dots": _dots,
    "star": _star,
    "cross": _cross,
    "ring": _ring,
    "diamond": _diamond,
    "vertical stripes": _vertical_stripes,
    "diagonal stripes": _diagonal_stripes,
}

# Patterns fill the whole image, so only the shapes move, scale and rotate.
_PATTERNS = {"horizontal stripes", "vertical stripes", "diagonal stripes", "checkerboard", "dots"}


def draw(classname: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 image `(size, size, 3)` of `classname` (a key of SHAPES)."""
    scale = 2
    hi = size * scale
    coords = (np.arange(hi) + 0.5) / scale  # pixel centres in output-pixel units
    y, x = np.meshgrid(coords, coords, indexing="ij")
    if classname in _PATTERNS:
        x, y = x + rng.uniform(0, size), y + rng.uniform(0, size)
        radius = size  # unused by the pattern masks
    else:
        centre = size / 2 + rng.uniform(-size * 0.12, size * 0.12, size=2)
        theta = rng.uniform(-0.35, 0.35) if classname not in ("star", "circle", "ring") else rng.uniform(0, 2 * np.pi)
        dx, dy = x - centre[0], y - centre[1]
        x = dx * np.cos(theta) + dy * np.sin(theta)
        y = -dx * np.sin(theta) + dy * np.cos(theta)
        radius = size * rng.uniform(0.25, 0.4)
    mask = SHAPES[classname](x, y, np.hypot(x, y), radius, rng).astype(np.float64)
    mask = mask.reshape(size, scale, size, scale).mean(axis=(1, 3))[..., None]

    # Foreground and background far apart in brightness, so every class stays recognisable.
    dark, light = rng.uniform(0.0, 0.35, size=3), rng.uniform(0.65, 1.0, size=3)
    fg, bg = (dark, light) if rng.random() < 0.5 else (light, dark)
    image = mask * fg + (1 - mask) * bg + rng.normal(0.0, 0.03, size=(size, size, 3))
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
