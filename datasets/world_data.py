"""Datasets drawn from the demo world (world.py), generated deterministically on first use in the layout of the
real benchmarks: `images/<class_folder>/<split>_<index>.png` plus a split file in the official format.

`WorldData` describes one such dataset (its classes, split sizes, seed and drawing function) and writes it;
`manifest.json` (written last, atomically) holds the SHA-256 of every generated file, so generation is skipped
while it matches and the whole set is rewritten when it is missing, of another generator version, or any file
differs. Every picture has its own generator keyed by (seed, label, split, index), so pictures do not depend
on generation order and leave every global RNG alone.

Two dataset shapes use it: `GeneratedBenchmark` (train / val / test, the benchmarks' pipeline: few-shot cache,
base/new subsampling; the `demo` dataset and the cross-dataset targets) and `GeneratedVariant` (test images
only, used as train_x and test with no val, no few-shot sampling and no class subsampling, as the ImageNet
variants are; the domain-generalisation targets).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

import numpy as np
from dassl.data.datasets import Datum, DatasetBase
from PIL import Image

from .atomic import write_bytes_atomic, write_json_atomic
from .benchmark import BenchmarkDataset
from .layout import DatasetLayout, missing_paths
from .splits import read_split

MANIFEST = "manifest.json"
IMAGE_DIR = "images"


def folder_name(classname: str) -> str:
    return classname.replace(" ", "_")


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class WorldData:
    """One generated dataset: `draw(classname, rng)` returns an RGB uint8 picture of that class."""

    classes: Sequence[str]
    split_sizes: Dict[str, int]  # images per class of each split, in split order (e.g. train, val, test)
    seed: int
    version: int  # bump when the drawing changes, so that existing copies are regenerated
    split_file: str
    draw: Callable[[str, np.random.Generator], np.ndarray]

    def generate(self, dataset_dir: str) -> None:
        """Write every image, the split file and finally the manifest into `dataset_dir`."""
        hashes: Dict[str, str] = {}
        split: Dict[str, List] = {name: [] for name in ("train", "val", "test")}
        for label, classname in enumerate(self.classes):
            for split_index, (split_name, count) in enumerate(self.split_sizes.items()):
                for i in range(count):
                    rng = np.random.default_rng([self.seed, label, split_index, i])
                    relpath = f"{folder_name(classname)}/{split_name}_{i:03d}.png"
                    data = _png_bytes(self.draw(classname, rng))
                    # Not fsynced one by one: the manifest, written durably last, catches any image lost in a crash.
                    write_bytes_atomic(os.path.join(dataset_dir, IMAGE_DIR, relpath), data, durable=False)
                    hashes[f"{IMAGE_DIR}/{relpath}"] = _sha256(data)
                    split[split_name].append([relpath, label, classname])
        write_json_atomic(split, os.path.join(dataset_dir, self.split_file))
        with open(os.path.join(dataset_dir, self.split_file), "rb") as f:
            hashes[self.split_file] = _sha256(f.read())
        write_json_atomic({"generator_version": self.version, "files": hashes}, os.path.join(dataset_dir, MANIFEST))

    def is_intact(self, dataset_dir: str) -> bool:
        """True when the manifest is there, of the current version, and every file it lists has its hash."""
        try:
            with open(os.path.join(dataset_dir, MANIFEST)) as f:
                manifest = json.load(f)
        except (OSError, ValueError):
            return False
        if manifest.get("generator_version") != self.version:
            return False
        for relpath, digest in manifest.get("files", {}).items():
            try:
                with open(os.path.join(dataset_dir, relpath), "rb") as f:
                    if _sha256(f.read()) != digest:
                        return False
            except OSError:
                return False
        return bool(manifest.get("files"))

    def ensure(self, dataset_dir: str) -> None:
        """Generate the dataset into `dataset_dir` unless an intact copy is already there."""
        if not self.is_intact(dataset_dir):
            print(f"Generating the {os.path.basename(dataset_dir)} dataset in {dataset_dir}")
            self.generate(dataset_dir)


class GeneratedBenchmark(BenchmarkDataset):
    """A generated dataset with train / val / test splits, run through the benchmarks' pipeline."""

    data: WorldData
    image_dir_name = IMAGE_DIR
    required = (IMAGE_DIR,)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "data" in cls.__dict__:
            cls.split_file = cls.data.split_file

    def prepare(self, dataset_dir: str) -> None:
        self.data.ensure(dataset_dir)

    @classmethod
    def missing_pieces(cls, dataset_dir: str):
        # Nothing can be missing: loading generates (or repairs) the whole folder first.
        return []


class GeneratedVariant(DatasetLayout, DatasetBase):
    """A generated test-only dataset: every image is both train_x and test, with no val, no few-shot sampling
    and no class subsampling (DATASET.SUBSAMPLE_CLASSES is ignored), as the ImageNet variants are."""

    data: WorldData

    def __init__(self, cfg):
        dataset_dir = self.locate(cfg)
        self.data.ensure(dataset_dir)
        self.require_layout(dataset_dir)
        self.dataset_dir = dataset_dir
        self.image_dir = os.path.join(dataset_dir, IMAGE_DIR)
        _, _, test = read_split(os.path.join(dataset_dir, self.data.split_file), self.image_dir)
        items: List[Datum] = list(test)
        super().__init__(train_x=items, test=items)

    @classmethod
    def missing_pieces(cls, dataset_dir: str):
        return missing_paths(dataset_dir, (IMAGE_DIR, cls.data.split_file))
