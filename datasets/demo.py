"""`Demo`: the embedded default dataset, generated deterministically on first use into `<root>/demo/`.

Same on-disk style as the real benchmarks: `images/<class_folder>/<split>_<index>.png` plus the split file
`split_demo.json` in the official format, then the usual pipeline (few-shot cache, base/new subsampling).
20 classes, the objects of the demo world (world.py) that the demo backbone `DemoCLIP-ViT-Tiny` was
pre-trained on, drawn in a shifted style it never saw (`world.shift_style`: ink sketches of the outlines with a
faint trace of the colours, and grain), 32x32 RGB PNGs, 32 train / 8 val / 50 test per class.
`manifest.json` (written last, atomically) holds the SHA-256 of every generated file; generation is
skipped while it matches, and the whole set is rewritten when it is missing or any file differs.
"""
import hashlib
import io
import json
import os
from typing import Dict

import numpy as np
from dassl.data.datasets import DATASET_REGISTRY
from PIL import Image

from .atomic import write_bytes_atomic, write_json_atomic
from .benchmark import BenchmarkDataset
from . import world

IMAGE_SIZE = 32
SPLIT_SIZES = {"train": 32, "val": 8, "test": 50}
SPLIT_FILE = "split_demo.json"
MANIFEST = "manifest.json"
# Bump when the drawing changes, so existing copies are regenerated.
GENERATOR_VERSION = 3
SEED = 20230101


def folder_name(classname: str) -> str:
    return classname.replace(" ", "_")


def draw(classname: str, rng: np.random.Generator) -> np.ndarray:
    """One demo picture of `classname`: a random scene of that object, in the demo's shifted style."""
    image = world.render_float(world.random_scene(rng, classname, style="photo"), IMAGE_SIZE, rng)
    return world.to_uint8(world.shift_style(image, rng))


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def generate(dataset_dir: str) -> None:
    """Write every image, the split file and finally the manifest into `dataset_dir`."""
    hashes: Dict[str, str] = {}
    split = {name: [] for name in SPLIT_SIZES}
    for label, classname in enumerate(world.OBJECTS):
        for split_index, (split_name, count) in enumerate(SPLIT_SIZES.items()):
            for i in range(count):
                # One generator per image, keyed by its identity: images do not depend on generation order.
                rng = np.random.default_rng([SEED, label, split_index, i])
                relpath = f"{folder_name(classname)}/{split_name}_{i:03d}.png"
                data = _png_bytes(draw(classname, rng))
                # Not fsynced one by one: the manifest, written durably last, catches any image lost in a crash.
                write_bytes_atomic(os.path.join(dataset_dir, "images", relpath), data, durable=False)
                hashes[f"images/{relpath}"] = _sha256(data)
                split[split_name].append([relpath, label, classname])
    write_json_atomic(split, os.path.join(dataset_dir, SPLIT_FILE))
    with open(os.path.join(dataset_dir, SPLIT_FILE), "rb") as f:
        hashes[SPLIT_FILE] = _sha256(f.read())
    write_json_atomic({"generator_version": GENERATOR_VERSION, "files": hashes}, os.path.join(dataset_dir, MANIFEST))


def is_intact(dataset_dir: str) -> bool:
    """True when the manifest is there, of the current version, and every file it lists has its hash."""
    try:
        with open(os.path.join(dataset_dir, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    if manifest.get("generator_version") != GENERATOR_VERSION:
        return False
    for relpath, digest in manifest.get("files", {}).items():
        try:
            with open(os.path.join(dataset_dir, relpath), "rb") as f:
                if _sha256(f.read()) != digest:
                    return False
        except OSError:
            return False
    return bool(manifest.get("files"))


def ensure_demo_data(dataset_dir: str) -> None:
    """Generate the demo dataset into `dataset_dir` unless an intact copy is already there."""
    if not is_intact(dataset_dir):
        print(f"Generating the demo dataset in {dataset_dir}")
        generate(dataset_dir)


@DATASET_REGISTRY.register()
class Demo(BenchmarkDataset):
    dataset_dir = "demo"
    image_dir_name = "images"
    split_file = SPLIT_FILE
    required = ("images",)

    def prepare(self, dataset_dir: str) -> None:
        ensure_demo_data(dataset_dir)

    @classmethod
    def missing_pieces(cls, dataset_dir: str):
        # Nothing can be missing: loading generates (or repairs) the whole folder first.
        return []
