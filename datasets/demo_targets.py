"""The demo's transfer targets (docs/DEMO.md), generated on first use like the `demo` dataset itself.

Cross-dataset transfer (a model trained on `demo`, evaluated on datasets whose classes are not the demo's,
in the demo's own sketch style): `DemoNature` and `DemoThings`, 8 objects each that the backbone was
pre-trained on but the demo never shows, and `DemoColours`, whose classes are the 7 colours of the world's
objects (any object, sketched): a target whose labels are another kind of concept, as DTD's textures or
EuroSAT's land use are for ImageNet prompts. 32 train / 8 val / 50 test pictures per class, like `demo`.

Domain generalisation (the demo's own classes, drawn otherwise; test images only, as the ImageNet variants):
`DemoPhoto`, `DemoDrawing` and `DemoPainting` in the three styles the backbone saw in pre-training, and
`DemoMosaic` in one it never saw (`world.mosaic`), with 10 of the 20 classes, relabelled in their own order,
as ImageNet-A and -R hold 200 of ImageNet's 1000. 25 pictures per class.
"""
from typing import Callable

import numpy as np
from dassl.data.datasets import DATASET_REGISTRY

from . import world
from .demo import IMAGE_SIZE, SPLIT_SIZES
from .world_data import GeneratedBenchmark, GeneratedVariant, WorldData

GENERATOR_VERSION = 1
VARIANT_SIZES = {"test": 25}
# Every other demo class: five base and five novel ones.
MOSAIC_CLASSES = list(world.OBJECTS)[::2]


def _sketched_object(classname: str, rng: np.random.Generator) -> np.ndarray:
    image = world.render_float(world.random_scene(rng, classname, style="photo"), IMAGE_SIZE, rng)
    return world.to_uint8(world.shift_style(image, rng))


def _sketched_colour(colour: str, rng: np.random.Generator) -> np.ndarray:
    scene = world.random_scene(rng, style="photo")
    scene = world.Scene(scene.obj, colour, scene.background, scene.size, scene.texture, scene.position, "photo")
    return world.to_uint8(world.shift_style(world.render_float(scene, IMAGE_SIZE, rng), rng))


def _in_style(style: str) -> Callable[[str, np.random.Generator], np.ndarray]:
    def draw(classname: str, rng: np.random.Generator) -> np.ndarray:
        return world.render(world.random_scene(rng, classname, style=style), IMAGE_SIZE, rng)
    return draw


def _mosaic(classname: str, rng: np.random.Generator) -> np.ndarray:
    image = world.render_float(world.random_scene(rng, classname, style="photo"), IMAGE_SIZE, rng)
    return world.to_uint8(world.mosaic(image))


def _data(name: str, classes, sizes, seed: int, draw) -> WorldData:
    return WorldData(list(classes), sizes, seed, GENERATOR_VERSION, f"split_{name}.json", draw)


@DATASET_REGISTRY.register()
class DemoNature(GeneratedBenchmark):
    dataset_dir = "demo_nature"
    data = _data("demo_nature", world.NATURE_OBJECTS, SPLIT_SIZES, 20230201, _sketched_object)


@DATASET_REGISTRY.register()
class DemoThings(GeneratedBenchmark):
    dataset_dir = "demo_things"
    data = _data("demo_things", world.THING_OBJECTS, SPLIT_SIZES, 20230202, _sketched_object)


@DATASET_REGISTRY.register()
class DemoColours(GeneratedBenchmark):
    dataset_dir = "demo_colours"
    data = _data("demo_colours", world.COLOURS, SPLIT_SIZES, 20230203, _sketched_colour)


@DATASET_REGISTRY.register()
class DemoPhoto(GeneratedVariant):
    dataset_dir = "demo_photo"
    data = _data("demo_photo", world.OBJECTS, VARIANT_SIZES, 20230301, _in_style("photo"))


@DATASET_REGISTRY.register()
class DemoDrawing(GeneratedVariant):
    dataset_dir = "demo_drawing"
    data = _data("demo_drawing", world.OBJECTS, VARIANT_SIZES, 20230302, _in_style("drawing"))


@DATASET_REGISTRY.register()
class DemoPainting(GeneratedVariant):
    dataset_dir = "demo_painting"
    data = _data("demo_painting", world.OBJECTS, VARIANT_SIZES, 20230303, _in_style("painting"))


@DATASET_REGISTRY.register()
class DemoMosaic(GeneratedVariant):
    dataset_dir = "demo_mosaic"
    data = _data("demo_mosaic", MOSAIC_CLASSES, VARIANT_SIZES, 20230304, _mosaic)
