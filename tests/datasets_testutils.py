"""Helpers for the datasets tests: a minimal config and miniature dataset trees in the official layouts."""
import json
import os
from typing import Dict, List, Sequence, Tuple

from PIL import Image
from yacs.config import CfgNode


def make_cfg(root: str, num_shots: int = -1, subsample: str = "all", seed: int = 1, **dataset_keys) -> CfgNode:
    """The keys the dataset classes read (the full Dassl config has them too)."""
    cfg = CfgNode()
    cfg.SEED = seed
    cfg.DATASET = CfgNode()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NUM_SHOTS = num_shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.DATASET.IMAGE_FOLDER = ""
    for key, value in dataset_keys.items():
        setattr(cfg.DATASET, key, value)
    return cfg


def write_image(path: str, value: int = 0) -> str:
    """A tiny real image (JPEG or PNG by extension); `value` varies the pixels so files differ."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (4, 4), (value % 256, 80, 160)).save(path)
    return path


def write_lines(path: str, lines: Sequence[str]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(line + "\n" for line in lines))


SplitSizes = Dict[str, int]
DEFAULT_SIZES: SplitSizes = {"train": 5, "val": 2, "test": 3}


def write_json_split(
    dataset_dir: str,
    prefix_dir: str,
    split_file: str,
    classes: List[Tuple[str, str]],
    sizes: SplitSizes = DEFAULT_SIZES,
) -> Dict[str, list]:
    """Images `<prefix>/<folder>/<split>_<i>.jpg` for each (folder, classname) and the split JSON describing them."""
    prefix = os.path.join(dataset_dir, prefix_dir) if prefix_dir else dataset_dir
    split = {name: [] for name in sizes}
    for label, (folder, classname) in enumerate(classes):
        for name, count in sizes.items():
            for i in range(count):
                rel = f"{folder}/{name}_{i}.jpg"
                write_image(os.path.join(prefix, rel), label * 10 + i)
                split[name].append([rel, label, classname])
    with open(os.path.join(dataset_dir, split_file), "w") as f:
        json.dump(split, f, indent=4)
    return split


def write_folder_tree(image_dir: str, counts: Dict[str, int]) -> None:
    """`<image_dir>/<folder>/img_<i>.jpg` with counts[folder] images each."""
    for k, (folder, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(os.path.join(image_dir, folder, f"img_{i}.jpg"), k * 10 + i)


def write_classnames(path: str, mapping: Dict[str, str]) -> None:
    write_lines(path, [f"{folder} {name}" for folder, name in mapping.items()])
