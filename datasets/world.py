"""The demo world: procedurally drawn scenes of named objects with attributes, and captions of them.

One scene is an object (a shape with a real-word name) with a colour, a size, a texture, a position, a
background colour and a drawing style (photo, line drawing, painting). `render` draws it as a small RGB image;
`caption` describes it in words, opening mostly with its style and naming a random subset of its attributes
("a photo of a small red striped star on the left."). The demo backbone is
contrastively pre-trained on (render, caption) pairs (scripts/pretrain_demo_backbone.py), and the `demo`
dataset draws the same objects in a shifted style (`shift_style`) that the backbone never saw.

Everything random comes from the `numpy.random.Generator` passed in, never from a global RNG (the few-shot
sampler draws from Python's global `random`, which must stay untouched). Numpy only: no torch here.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, Tuple

import numpy as np

# A mask takes normalised coordinates u (right), v (down) of a shape of radius 1, and r = hypot(u, v).
Mask = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _regular_polygon(sides: int) -> Mask:
    half = np.pi / sides

    def mask(u, v, r):
        # Apex up: measure angles from the upward direction, fold into one sector, compare with the edge.
        angle = np.arctan2(u, -v)
        return r * np.cos(np.mod(angle, 2 * half) - half) < np.cos(half)
    return mask


def _heart(u, v, r):
    x, y = u * 1.15, -v * 1.15 + 0.15
    return (x * x + y * y - 1) ** 3 - x * x * y ** 3 < 0


def _arrow(u, v, r):
    shaft = (np.abs(v) < 0.22) & (u > -1) & (u < 0.15)
    head = (u >= 0.15) & (np.abs(v) < 1 - u)
    return shaft | head


def _house(u, v, r):
    walls = (np.abs(u) < 0.7) & (v > -0.1) & (v < 0.85)
    roof = (v <= -0.1) & (np.abs(u) < 0.9 * (v + 0.95) / 0.85)
    return walls | roof


def _tree(u, v, r):
    trunk = (np.abs(u) < 0.15) & (v > 0.5) & (v < 0.95)
    crown = (v > -1) & (v < 0.55) & (np.abs(u) < 0.75 * (v + 1) / 1.55)
    return trunk | crown


def _polygon(points) -> Mask:
    """The inside of a closed polygon given by (u, v) corners (even-odd rule)."""
    corners = np.asarray(points, dtype=float)

    def mask(u, v, r):
        inside = np.zeros_like(u, dtype=bool)
        for (u0, v0), (u1, v1) in zip(corners, np.roll(corners, -1, axis=0)):
            crosses = (v0 > v) != (v1 > v)
            with np.errstate(divide="ignore", invalid="ignore"):
                at = u0 + (v - v0) * (u1 - u0) / (v1 - v0)
            inside ^= crosses & (u < at)
        return inside
    return mask


def _disc(cu: float, cv: float, radius: float, u, v):
    return np.hypot(u - cu, v - cv) < radius


def _box(u0: float, u1: float, v0: float, v1: float, u, v):
    return (u > u0) & (u < u1) & (v > v0) & (v < v1)


def _cloud(u, v, r):
    puffs = _disc(-0.5, 0.15, 0.42, u, v) | _disc(0.0, -0.15, 0.55, u, v) | _disc(0.5, 0.15, 0.42, u, v)
    return (puffs | _box(-0.5, 0.5, 0.1, 0.57, u, v)) & (v < 0.57)


def _drop(u, v, r):
    return _disc(0.0, 0.3, 0.6, u, v) | ((v <= 0.3) & (v > -1.0) & (np.abs(u) < 0.6 * (v + 1.0) / 1.3))


def _leaf(u, v, r):
    # a pointed lens tilted by 45 degrees, with a short stalk at its lower end
    a, b = (u + v) / np.sqrt(2), (v - u) / np.sqrt(2)
    blade = _disc(0.55, 0.0, 1.0, a, b * 1.1) & _disc(-0.55, 0.0, 1.0, a, b * 1.1) & (b > -0.9)
    stalk = (np.abs(a) < 0.1) & (b > 0.5) & (b < 1.15)
    return blade | stalk


def _fish(u, v, r):
    body = ((u + 0.2) / 0.65) ** 2 + (v / 0.45) ** 2 < 1
    tail = (u > 0.35) & (u < 0.95) & (np.abs(v) < 0.1 + 0.8 * (u - 0.35))
    return body | tail


def _mushroom(u, v, r):
    cap = _disc(0.0, 0.05, 0.95, u, v) & (v < 0.05)
    stem = _box(-0.25, 0.25, 0.0, 0.85, u, v)
    return cap | stem


def _mountain(u, v, r):
    base = v < 0.7
    return base & ((np.abs(u + 0.3) < 0.75 * (v + 0.85)) | (np.abs(u - 0.45) < 0.8 * (v + 0.3))) & (v > -0.85)


def _cactus(u, v, r):
    trunk = _box(-0.2, 0.2, -0.95, 0.95, u, v)
    left = _box(-0.7, -0.2, 0.0, 0.25, u, v) | _box(-0.7, -0.45, -0.55, 0.25, u, v)
    right = _box(0.2, 0.7, -0.25, 0.0, u, v) | _box(0.45, 0.7, -0.75, 0.0, u, v)
    return trunk | left | right


def _cup(u, v, r):
    body = _box(-0.7, 0.35, -0.6, 0.7, u, v)
    ring = np.hypot(u - 0.4, v - 0.02)
    handle = (ring < 0.42) & (ring > 0.2) & (u > 0.35)
    return body | handle


def _umbrella(u, v, r):
    canopy = _disc(0.0, -0.05, 0.95, u, v) & (v < -0.05)
    shaft = _box(-0.08, 0.08, -0.1, 0.7, u, v)
    bend = np.hypot(u + 0.2, v - 0.7)
    hook = (bend < 0.28) & (bend > 0.12) & (v > 0.7)
    return canopy | shaft | hook


def _bell(u, v, r):
    body = (v > -0.65) & (v < 0.5) & (np.abs(u) < 0.25 + 0.5 * ((v + 0.65) / 1.15) ** 2)
    rim = _box(-0.85, 0.85, 0.4, 0.58, u, v)
    return body | rim | _disc(0.0, -0.75, 0.17, u, v) | _disc(0.0, 0.7, 0.17, u, v)


def _bottle(u, v, r):
    neck = _box(-0.16, 0.16, -0.95, -0.35, u, v)
    shoulder = (v >= -0.35) & (v < -0.1) & (np.abs(u) < 0.16 + 1.2 * (v + 0.35))
    body = _box(-0.46, 0.46, -0.11, 0.95, u, v)
    return neck | shoulder | body


def _key(u, v, r):
    ring = np.hypot(u + 0.55, v)
    bow = (ring < 0.42) & (ring > 0.18)
    shaft = _box(-0.2, 0.95, -0.1, 0.1, u, v)
    teeth = _box(0.5, 0.66, 0.0, 0.38, u, v) | _box(0.78, 0.95, 0.0, 0.32, u, v)
    return bow | shaft | teeth


def _boat(u, v, r):
    hull = (v > 0.3) & (v < 0.7) & (np.abs(u) < 0.95 - 0.9 * (v - 0.3))
    mast = _box(-0.06, 0.06, -0.95, 0.32, u, v)
    sail = (v > -0.85) & (v < 0.2) & (u > 0.06) & (u < 0.06 + 0.68 * (v + 0.85) / 1.05)
    return hull | mast | sail


def _car(u, v, r):
    body = _box(-0.95, 0.95, -0.1, 0.38, u, v)
    cabin = (v > -0.5) & (v <= -0.1) & (np.abs(u) < 0.4 + 0.6 * (v + 0.5))
    wheels = _disc(-0.52, 0.42, 0.26, u, v) | _disc(0.52, 0.42, 0.26, u, v)
    return body | cabin | wheels


# Object name -> mask, in the demo's label order: its first half are the base classes, the rest the novel
# ones; each half mixes round, angular and composite shapes, and most novel objects have a base relative
# (ring/circle, frame/square, pentagon/hexagon), as real novel classes do.
OBJECTS: Dict[str, Mask] = {
    "circle": lambda u, v, r: r < 0.9,
    "square": lambda u, v, r: np.maximum(np.abs(u), np.abs(v)) < 0.78,
    "triangle": lambda u, v, r: (v < 0.6) & (2 * np.abs(u) < v + 1),
    "star": lambda u, v, r: r < 0.45 + 0.55 * np.abs(np.cos(2.5 * np.arctan2(u, -v))) ** 3,
    "heart": _heart,
    "arrow": _arrow,
    "hexagon": _regular_polygon(6),
    "oval": lambda u, v, r: u * u + (v / 0.55) ** 2 < 1,
    "house": _house,
    "flower": lambda u, v, r: r < 0.5 + 0.5 * np.abs(np.cos(3 * np.arctan2(u, -v))),
    "ring": lambda u, v, r: (r < 0.95) & (r > 0.55),
    "cross": lambda u, v, r: ((np.abs(u) < 0.3) & (np.abs(v) < 1)) | ((np.abs(v) < 0.3) & (np.abs(u) < 1)),
    "diamond": lambda u, v, r: np.abs(u) / 0.75 + np.abs(v) < 1,
    "moon": lambda u, v, r: (r < 0.95) & (np.hypot(u - 0.5, v + 0.15) > 0.8),
    "rectangle": lambda u, v, r: (np.abs(u) < 1) & (np.abs(v) < 0.5),
    "pentagon": _regular_polygon(5),
    "hourglass": lambda u, v, r: (np.abs(v) < 0.9) & (np.abs(u) < 0.08 + 0.85 * np.abs(v)),
    "semicircle": lambda u, v, r: (np.hypot(u, v - 0.35) < 1) & (v < 0.35),
    "tree": _tree,
    "frame": lambda u, v, r: (np.maximum(np.abs(u), np.abs(v)) < 0.85) & (np.maximum(np.abs(u), np.abs(v)) > 0.55),
}
# The objects of the cross-dataset targets (datasets/demo_targets.py): the backbone is pre-trained on them as
# on the demo's own, but no demo class is one of them, so prompts learned on the demo meet new class names.
NATURE_OBJECTS: Dict[str, Mask] = {
    "cloud": _cloud,
    "drop": _drop,
    "leaf": _leaf,
    "fish": _fish,
    "mushroom": _mushroom,
    "mountain": _mountain,
    "lightning": _polygon([(0.1, -1.0), (0.6, -1.0), (0.2, -0.2), (0.55, -0.2), (-0.35, 1.0), (-0.05, 0.1),
                           (-0.45, 0.1)]),
    "cactus": _cactus,
}
THING_OBJECTS: Dict[str, Mask] = {
    "cup": _cup,
    "umbrella": _umbrella,
    "bell": _bell,
    "bottle": _bottle,
    "key": _key,
    "boat": _boat,
    "car": _car,
    "crown": _polygon([(-0.85, 0.65), (0.85, 0.65), (0.85, -0.55), (0.45, 0.0), (0.0, -0.7), (-0.45, 0.0),
                       (-0.85, -0.55)]),
}
# Everything the world draws and the backbone is pre-trained on.
WORLD_OBJECTS: Dict[str, Mask] = {**OBJECTS, **NATURE_OBJECTS, **THING_OBJECTS}
# Round shapes look the same at any angle; the others are only tilted a little, so "arrow" keeps pointing right
# and "house" stays upright, as their names promise.
_ROUND = {"circle", "ring", "flower", "star"}

# Object colours, and the light backgrounds they stand on: every picture of the world is a darker, coloured
# object on a light ground, so a shape reads the same in every colour (the demo's style breaks this).
COLOURS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.1),
    "green": (0.12, 0.62, 0.18),
    "blue": (0.12, 0.28, 0.9),
    "purple": (0.55, 0.18, 0.72),
    "orange": (1.0, 0.55, 0.08),
    "brown": (0.5, 0.3, 0.12),
    "black": (0.05, 0.05, 0.05),
}
BACKGROUNDS: Dict[str, Tuple[float, float, float]] = {
    "white": (0.96, 0.96, 0.96),
    "gray": (0.78, 0.78, 0.78),
}
# Radius of the object as a fraction of the image side.
SIZES: Dict[str, Tuple[float, float]] = {"small": (0.2, 0.26), "large": (0.33, 0.42)}
TEXTURES = ("solid", "striped", "dotted", "checkered")
_TEXTURE_ODDS = (0.7, 0.1, 0.1, 0.1)  # plain objects are the most common
# Offset of a small object's centre, in units of the image side; large objects stay centred.
POSITIONS: Dict[str, Tuple[float, float]] = {
    "in the center": (0.0, 0.0), "on the left": (-0.22, 0.0), "on the right": (0.22, 0.0),
    "at the top": (0.0, -0.22), "at the bottom": (0.0, 0.22),
}
# How a picture is drawn, and the caption openings that say so. The style words are what makes the openings
# of a caption mean something: a text encoder that reads them is one whose context a prompt learner can move.
STYLES: Dict[str, Tuple[str, ...]] = {
    "photo": ("a photo of a", "a picture of a"),
    "drawing": ("a drawing of a", "a line drawing of a"),
    "painting": ("a painting of a", "a blurry painting of a"),
}
_STYLE_ODDS = (0.5, 0.25, 0.25)
# Openings that name no style, used for any picture now and then.
GENERIC_PREFIXES = ("an image of a", "a", "this is a")
PREFIXES = (*(p for openings in STYLES.values() for p in openings), *GENERIC_PREFIXES)
# Words of the captions other than attribute values and object names (for the backbone's vocabulary).
CAPTION_WORDS = (*PREFIXES, "on a background")
_SUPERSAMPLE = 2  # drawn at 2x and averaged down: cheap anti-aliasing


@dataclass(frozen=True)
class Scene:
    """What a picture shows; every field is a key of the tables above."""
    obj: str
    colour: str
    background: str
    size: str
    texture: str
    position: str
    style: str = "photo"


def mirrored(scene: Scene) -> Scene:
    """The scene of the left-right mirror image (only its position changes name)."""
    swap = {"on the left": "on the right", "on the right": "on the left"}
    return replace(scene, position=swap.get(scene.position, scene.position))


def random_scene(rng: np.random.Generator, obj: str | None = None, style: str | None = None) -> Scene:
    """A scene with uniformly drawn attributes (and object and style, unless given)."""
    names = list(WORLD_OBJECTS)
    obj = obj if obj is not None else names[rng.integers(len(names))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    size = list(SIZES)[rng.integers(len(SIZES))]
    position = list(POSITIONS)[rng.integers(len(POSITIONS))] if size == "small" else "in the center"
    texture = TEXTURES[rng.choice(len(TEXTURES), p=_TEXTURE_ODDS)]
    style = style if style is not None else list(STYLES)[rng.choice(len(STYLES), p=_STYLE_ODDS)]
    return Scene(obj, colour, background, size, texture, position, style)


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """One description of `scene`: an opening that mostly names its style, a random subset of its attributes,
    the object's name. Each attribute is named now and then only, so that the object's name carries most
    captions."""
    openings = STYLES[scene.style] if rng.random() < 0.8 else GENERIC_PREFIXES
    words = [openings[rng.integers(len(openings))]]
    if rng.random() < 0.3:
        words.append(scene.size)
    if rng.random() < 0.3:
        words.append(scene.colour)
    if scene.texture != "solid" and scene.style != "drawing" and rng.random() < 0.3:  # lines show no fill
        words.append(scene.texture)
    words.append(scene.obj)
    if scene.position != "in the center" and rng.random() < 0.2:
        words.append(scene.position)
    if rng.random() < 0.1:
        words.append(f"on a {scene.background} background")
    return " ".join(words) + ("." if rng.random() < 0.5 else "")


def _texture(texture: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Where the object's second shade goes (a boolean map over the pixel grid)."""
    if texture == "striped":
        period, phase = rng.uniform(3.5, 5.0), rng.uniform(0, 2 * np.pi)
        return np.sin(2 * np.pi * (x + y) / (np.sqrt(2) * period) + phase) > 0
    if texture == "dotted":
        pitch = rng.uniform(4.0, 5.5)
        u, v = np.mod(x, pitch) - pitch / 2, np.mod(y, pitch) - pitch / 2
        return u * u + v * v < (pitch * 0.3) ** 2
    if texture == "checkered":
        cell = rng.uniform(2.5, 3.5)
        return (np.floor(x / cell) + np.floor(y / cell)) % 2 == 0
    return np.zeros_like(x, dtype=bool)


def render_float(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """The scene as a float RGB image (size, size, 3) in [0, 1], with jitter of pose and shade."""
    hi = size * _SUPERSAMPLE
    coords = (np.arange(hi) + 0.5) / _SUPERSAMPLE  # pixel centres in output-pixel units
    y, x = np.meshgrid(coords, coords, indexing="ij")
    offset = np.array(POSITIONS[scene.position]) * size + rng.uniform(-0.05, 0.05, size=2) * size
    centre = size / 2 + offset
    radius = size * rng.uniform(*SIZES[scene.size])
    theta = rng.uniform(0, 2 * np.pi) if scene.obj in _ROUND else rng.uniform(-0.3, 0.3)
    dx, dy = (x - centre[0]) / radius, (y - centre[1]) / radius
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    inside = WORLD_OBJECTS[scene.obj](u, v, np.hypot(u, v))

    fg = np.clip(np.array(COLOURS[scene.colour]) + rng.normal(0, 0.04, 3), 0, 1)
    bg = np.clip(np.array(BACKGROUNDS[scene.background]) + rng.normal(0, 0.03, 3), 0, 1)
    # The second shade of a textured object: towards white for dark colours, towards black for light ones.
    shade = fg * 0.35 if fg.mean() > 0.5 else fg + (1 - fg) * 0.6
    second = _texture(scene.texture, x, y, rng)
    colour = np.where(second[..., None], shade, fg)
    if scene.style == "drawing":
        image = np.where(_outline(inside)[..., None], fg, bg)
    else:
        image = np.where(inside[..., None], colour, bg)
    image = image.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    if scene.style == "painting":
        image = _blur(image) + rng.normal(0.0, 0.05, size=3)  # soft edges and a tinted canvas
    return np.clip(image + rng.normal(0.0, 0.02, size=image.shape), 0.0, 1.0)


def _outline(inside: np.ndarray) -> np.ndarray:
    """The pixels of a mask within `_SUPERSAMPLE` pixels of its edge (a line one output pixel wide)."""
    eroded = inside.copy()
    for axis in (0, 1):
        for step in range(1, _SUPERSAMPLE + 1):
            eroded &= np.roll(inside, step, axis) & np.roll(inside, -step, axis)
    return inside & ~eroded


def _blur(image: np.ndarray) -> np.ndarray:
    """A separable binomial blur of about 1.5 pixels, edges repeated."""
    kernel = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    for axis in (0, 1):
        padded = np.pad(image, [(2, 2) if a == axis else (0, 0) for a in range(3)], mode="edge")
        image = sum(w * np.take(padded, np.arange(i, i + image.shape[axis]), axis=axis)
                    for i, w in enumerate(kernel))
    return image


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)


def render(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """The scene as an RGB uint8 image (size, size, 3), in the pre-training world's own style."""
    return to_uint8(render_float(scene, size, rng))


# How much of the original picture shows through the demo's sketch style.
_SKETCH_TRACE = 0.35


def _sketch(image: np.ndarray) -> np.ndarray:
    """Dark ink lines where the picture's brightness changes, on white."""
    gy, gx = np.gradient(image.mean(axis=-1))
    ink = np.clip(np.hypot(gx, gy) * 3.0, 0.0, 1.0)
    return np.repeat(1.0 - ink[..., None], 3, axis=-1)


def shift_style(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The demo dataset's domain, which pre-training never shows: the picture redrawn as an ink sketch of its
    outlines, with a faint trace of its colours and fills, and grain. Shapes stay readable, so the objects
    are still recognisable, but the features of every picture move away from where captions put them."""
    sketch = (1.0 - _SKETCH_TRACE) * _sketch(image) + _SKETCH_TRACE * image
    return np.clip(sketch + rng.normal(0.0, 0.03, size=image.shape), 0.0, 1.0)


def mosaic(image: np.ndarray, tile: int = 4) -> np.ndarray:
    """A second style pre-training never shows (a domain-generalisation target): the picture as a mosaic of
    `tile` x `tile` pixel squares, each the mean colour of what it covers. Large shapes keep their outline in
    coarse steps; small ones become a few blocks."""
    size = image.shape[0]
    blocks = image.reshape(size // tile, tile, size // tile, tile, 3).mean(axis=(1, 3))
    return np.repeat(np.repeat(blocks, tile, axis=0), tile, axis=1)
