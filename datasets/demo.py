"""`Demo`: the embedded default dataset, generated deterministically on first use into `<root>/demo/`.

Same on-disk style as the real benchmarks: `images/<class_folder>/<split>_<index>.png` plus the split file
`split_demo.json` in the official format, then the usual pipeline (few-shot cache, base/new subsampling).
20 classes, the objects of the demo world (world.OBJECTS) that the demo backbone `DemoCLIP-ViT-Tiny` was
pre-trained on, drawn in a shifted style it never saw (`world.shift_style`: ink sketches of the outlines with a
faint trace of the colours, and grain), 32x32 RGB PNGs, 32 train / 8 val / 50 test per class. The generation
and its manifest check are `world_data.WorldData`; datasets/demo_targets.py holds the demo's transfer targets.
"""
import numpy as np
from dassl.data.datasets import DATASET_REGISTRY

from . import world
from .world_data import MANIFEST, GeneratedBenchmark, WorldData, folder_name  # noqa: F401 (public names)

IMAGE_SIZE = 32
SPLIT_SIZES = {"train": 32, "val": 8, "test": 50}
SPLIT_FILE = "split_demo.json"
# Bump when the drawing changes, so existing copies are regenerated.
GENERATOR_VERSION = 3
SEED = 20230101


def draw(classname: str, rng: np.random.Generator) -> np.ndarray:
    """One demo picture of `classname`: a random scene of that object, in the demo's shifted style."""
    image = world.render_float(world.random_scene(rng, classname, style="photo"), IMAGE_SIZE, rng)
    return world.to_uint8(world.shift_style(image, rng))


DATA = WorldData(list(world.OBJECTS), SPLIT_SIZES, SEED, GENERATOR_VERSION, SPLIT_FILE, draw)
generate = DATA.generate
is_intact = DATA.is_intact
ensure_demo_data = DATA.ensure


@DATASET_REGISTRY.register()
class Demo(GeneratedBenchmark):
    dataset_dir = "demo"
    data = DATA
