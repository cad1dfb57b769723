"""The split helpers shared by every benchmark dataset (PROTOCOL.md §3.1-3.2), written once.

The official code defines them as static methods of `OxfordPets` (`read_split`, `save_split`,
`split_trainval`, `subsample_classes`) and `DescribableTextures` (`read_and_split_data`); those classes
re-export the functions below, so dataset files from other repositories that call them keep working.
Every function consumes Python's global `random` exactly as the official one does, so a split built
from raw annotations for a given seed state is the same.
"""
import math
import os
import random
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from dassl.data.datasets import Datum
from dassl.utils import listdir_nohidden, read_json

from .atomic import write_json_atomic
from .layout import DatasetFileError

SUBSAMPLE_CHOICES = ("all", "base", "new")
SPLIT_KEYS = ("train", "val", "test")

Splits = Tuple[List[Datum], List[Datum], List[Datum]]


def read_split(filepath: str, path_prefix: str) -> Splits:
    """Read a `split_zhou_*.json` file: `[relative_path, label, classname]` triples joined onto `path_prefix`.
    A malformed file raises DatasetFileError naming the file and the first bad entry."""
    print(f"Reading split from {filepath}")
    split = read_json(filepath)
    if not isinstance(split, dict) or any(not isinstance(split.get(key), list) for key in SPLIT_KEYS):
        found = sorted(split) if isinstance(split, dict) else type(split).__name__
        raise DatasetFileError(f'split file "{filepath}" must be an object with the lists {", ".join(SPLIT_KEYS)}; '
                               f"found {found} (delete it if the dataset can rebuild it, see docs/DATASETS.md)")
    names_of_label: Dict[int, Tuple[str, str]] = {}
    splits = []
    for key in SPLIT_KEYS:
        items = []
        for index, entry in enumerate(split[key]):
            where = f'split file "{filepath}": {key}[{index}] {entry!r}'
            if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and isinstance(entry[0], str)
                    and isinstance(entry[1], int) and not isinstance(entry[1], bool) and entry[1] >= 0
                    and isinstance(entry[2], str)):
                raise DatasetFileError(f"{where} is not [relative image path, label >= 0, class name]")
            impath, label, classname = entry
            first = names_of_label.setdefault(label, (classname, f"{key}[{index}]"))
            if first[0] != classname:
                raise DatasetFileError(f"{where} names label {label} {classname!r}, but {first[1]} names it {first[0]!r}")
            items.append(Datum(impath=os.path.join(path_prefix, impath), label=label, classname=classname))
        splits.append(items)
    return splits[0], splits[1], splits[2]


def _relative(impath: str, path_prefix: str) -> str:
    if impath.startswith(path_prefix):
        impath = impath[len(path_prefix):]
    return impath[1:] if impath.startswith("/") else impath


def save_split(train: List[Datum], val: List[Datum], test: List[Datum], filepath: str, path_prefix: str) -> None:
    """Write the three lists in the split JSON format, image paths made relative to `path_prefix`."""

    def _extract(items: List[Datum]) -> List[list]:
        return [[_relative(item.impath, path_prefix), item.label, item.classname] for item in items]

    split = {"train": _extract(train), "val": _extract(val), "test": _extract(test)}
    write_json_atomic(split, filepath)
    print(f"Saved split to {filepath}")


def split_trainval(trainval: List[Datum], p_val: float = 0.2) -> Tuple[List[Datum], List[Datum]]:
    """Per label (first-appearance order): shuffle, the first round(n * p_val) go to val, the rest to train."""
    p_trn = 1 - p_val
    print(f"Splitting trainval into {p_trn:.0%} train and {p_val:.0%} val")
    tracker: Dict[int, List[int]] = defaultdict(list)
    for idx, item in enumerate(trainval):
        tracker[item.label].append(idx)

    train, val = [], []
    for label, idxs in tracker.items():
        n_val = round(len(idxs) * p_val)
        if n_val <= 0:
            raise ValueError(
                f"Cannot split label {label} ({trainval[idxs[0]].classname!r}) into train/val: it has only "
                f"{len(idxs)} image(s), so its {p_val:.0%} validation share rounds to 0."
            )
        random.shuffle(idxs)
        for n, idx in enumerate(idxs):
            (val if n < n_val else train).append(trainval[idx])
    return train, val


def split_counts(n_total: int, p_trn: float, p_val: float) -> Tuple[int, int, int]:
    """(train, val, test) sizes of one class: round() (banker's rounding) of the train and val shares."""
    n_train = round(n_total * p_trn)
    n_val = round(n_total * p_val)
    return n_train, n_val, n_total - n_train - n_val


def read_and_split_data(
    image_dir: str,
    p_trn: float = 0.5,
    p_val: float = 0.2,
    ignored: Sequence[str] = (),
    new_cnames: Optional[Dict[str, str]] = None,
) -> Splits:
    """Split a `<image_dir>/<category>/<image>` tree per category: shuffle, then p_trn train, p_val val, rest test.

    Labels follow the sorted category folders (minus `ignored`); class names are the folder names unless
    `new_cnames` renames them. Images are taken in `os.listdir` order before the shuffle, as officially.
    """
    categories = sorted(c for c in listdir_nohidden(image_dir) if c not in ignored)
    p_tst = 1 - p_trn - p_val
    print(f"Splitting into {p_trn:.0%} train, {p_val:.0%} val, and {p_tst:.0%} test")

    train, val, test = [], [], []
    for label, category in enumerate(categories):
        category_dir = os.path.join(image_dir, category)
        images = [os.path.join(category_dir, im) for im in listdir_nohidden(category_dir)]
        random.shuffle(images)
        n_train, n_val, n_test = split_counts(len(images), p_trn, p_val)
        if min(n_train, n_val, n_test) <= 0:
            raise ValueError(
                f"Cannot split {category_dir} into train/val/test: {len(images)} image(s) give "
                f"{n_train}/{n_val}/{n_test}; every part needs at least one image."
            )
        classname = new_cnames.get(category, category) if new_cnames else category
        for part, ims in ((train, images[:n_train]), (val, images[n_train:n_train + n_val]), (test, images[n_train + n_val:])):
            part.extend(Datum(impath=im, label=label, classname=classname) for im in ims)
    return train, val, test


def check_subsample(subsample: str) -> None:
    if subsample not in SUBSAMPLE_CHOICES:
        raise ValueError(
            f"DATASET.SUBSAMPLE_CLASSES must be one of {', '.join(map(repr, SUBSAMPLE_CHOICES))}; got {subsample!r}."
        )


def subsample_classes(*datasets: List[Datum], subsample: str = "all"):
    """Keep the base (first ceil(n/2) label ids of the first list) or new (the rest) classes, relabelled from 0.

    "all" returns the inputs unchanged (as a tuple); otherwise a list of filtered lists of fresh Datum objects
    (domain 0), as in the official code.
    """
    check_subsample(subsample)
    if subsample == "all":
        return datasets

    labels = sorted({item.label for item in datasets[0]})
    m = math.ceil(len(labels) / 2)
    print(f"SUBSAMPLE {subsample.upper()} CLASSES!")
    selected = labels[:m] if subsample == "base" else labels[m:]
    relabeler = {y: y_new for y_new, y in enumerate(selected)}
    return [
        [Datum(impath=item.impath, label=relabeler[item.label], classname=item.classname)
         for item in dataset if item.label in relabeler]
        for dataset in datasets
    ]
