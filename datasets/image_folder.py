"""`ImageFolder`: your own data with no code: `<folder>/<class>/<image>` (+ optional `classnames.txt`).

The folder is `DATASET.IMAGE_FOLDER` when it is set, else `<DATASET.ROOT>/imagefolder`. On first use a train/val/test split (50/20/30 per class, shuffled by a
fixed-seed RNG of its own, so it does not depend on the run's seed) is written next to the data as
`split_imagefolder.json` in the official format; later runs read it, so every run and every method sees
the same split. Delete that file after adding images to re-split. Few-shot caches and base/new
subsampling work as for the benchmarks.
"""
import os
import random
from typing import Dict, List

from dassl.data.datasets import DATASET_REGISTRY, Datum

from .benchmark import BenchmarkDataset
from .imagenet import read_classnames
from .layout import resolve_root
from .splits import split_counts

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLIT_SEED = 0
P_TRAIN, P_VAL = 0.5, 0.2


def class_folders(folder: str) -> List[str]:
    """Sorted sub-folders that are classes (hidden ones and the few-shot cache folder are not)."""
    return sorted(
        entry.name for entry in os.scandir(folder)
        if entry.is_dir() and not entry.name.startswith(".") and entry.name != "split_fewshot"
    )


def image_files(class_dir: str) -> List[str]:
    return sorted(
        name for name in os.listdir(class_dir)
        if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)
    )


@DATASET_REGISTRY.register()
class ImageFolder(BenchmarkDataset):
    dataset_dir = "imagefolder"
    split_file = "split_imagefolder.json"

    @staticmethod
    def extend_cfg(cfg) -> None:
        # Where the user's <class>/<image> tree is; empty = <DATASET.ROOT>/imagefolder.
        cfg.DATASET.IMAGE_FOLDER = ""

    @classmethod
    def locate(cls, cfg) -> str:
        folder = cfg.DATASET.IMAGE_FOLDER
        return os.path.abspath(os.path.expanduser(folder)) if folder else os.path.join(resolve_root(cfg), cls.dataset_dir)

    @classmethod
    def missing_pieces(cls, dataset_dir: str) -> List[str]:
        missing = super().missing_pieces(dataset_dir)
        if not missing and not os.path.exists(os.path.join(dataset_dir, cls.split_file)) and not class_folders(dataset_dir):
            missing.append(f"class folders with images (<class>/<image>) in {dataset_dir}")
        return missing

    def build_split(self):
        names = self.class_names()
        rng = random.Random(SPLIT_SEED)
        train, val, test, too_small = [], [], [], []
        for label, folder in enumerate(class_folders(self.image_dir)):
            class_dir = os.path.join(self.image_dir, folder)
            images = [os.path.join(class_dir, name) for name in image_files(class_dir)]
            rng.shuffle(images)
            n_train, n_val, n_test = split_counts(len(images), P_TRAIN, P_VAL)
            if min(n_train, n_val, n_test) <= 0:
                too_small.append(f"{folder} ({len(images)})")
                continue
            classname = names.get(folder, folder)
            parts = ((train, images[:n_train]), (val, images[n_train:n_train + n_val]), (test, images[n_train + n_val:]))
            for part, ims in parts:
                part.extend(Datum(impath=im, label=label, classname=classname) for im in ims)
        if too_small:
            raise ValueError(
                f"ImageFolder {self.image_dir}: every class needs at least 4 images to get a train, a val and a "
                f"test image; too few in: {', '.join(too_small)}"
            )
        return train, val, test

    def class_names(self) -> Dict[str, str]:
        """Folder -> class name from the optional `classnames.txt` (`<folder> <class name>` lines)."""
        text_file = os.path.join(self.dataset_dir, "classnames.txt")
        return dict(read_classnames(text_file)) if os.path.exists(text_file) else {}
