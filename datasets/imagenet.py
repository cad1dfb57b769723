import os
from collections import OrderedDict
from typing import Dict, List

from dassl.data.datasets import DATASET_REGISTRY, Datum
from dassl.utils import listdir_nohidden

from .atomic import read_pickle, write_pickle_atomic
from .benchmark import BenchmarkDataset
from .layout import DatasetFileError


class ClassNameMissingError(DatasetFileError, KeyError):
    """A class folder without a line in classnames.txt (a KeyError, as before, for callers that catch one)."""

    def __str__(self) -> str:  # KeyError's own str() would quote the message
        return str(self.args[0])


def read_classnames(text_file: str) -> "OrderedDict[str, str]":
    """`classnames.txt`: lines `<folder> <class name words...>` -> {folder: class name}, in file order; blank lines
    are skipped, a line without a class name or a folder named twice raises DatasetFileError naming the line."""
    classnames = OrderedDict()
    with open(text_file, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            folder, _, name = line.strip().partition(" ")  # the name keeps its inner spacing, as officially
            if not folder:
                continue
            if not name.strip():
                raise DatasetFileError(f'class-name file "{text_file}", line {number}: {folder!r} has no class name '
                                       "(expected '<folder> <class name>')")
            if folder in classnames:
                raise DatasetFileError(f'class-name file "{text_file}", line {number}: the folder {folder!r} is named '
                                       "a second time")
            classnames[folder] = name
    return classnames


def classname_of(classnames: Dict[str, str], folder: str, text_file: str) -> str:
    try:
        return classnames[folder]
    except KeyError:
        raise ClassNameMissingError(
            f"Class folder {folder!r} has no line in {text_file} (expected '<folder> <class name>').") from None


@DATASET_REGISTRY.register()
class ImageNet(BenchmarkDataset):
    """ImageNet's val set is the test set and also serves as val; the full lists are cached in
    `preprocessed.pkl` (listing 1.28M files is slow) and the few-shot cache holds train only."""

    dataset_dir = "imagenet"
    image_dir_name = "images"
    split_file = "preprocessed.pkl"
    required = ("images",)
    raw_files = ("images/train", "images/val", "classnames.txt")

    read_classnames = staticmethod(read_classnames)

    def load_splits(self):
        if os.path.exists(self.split_path):
            preprocessed = read_pickle(self.split_path)
            return preprocessed["train"], None, preprocessed["test"]
        train, _, test = self.build_split()
        write_pickle_atomic({"train": train, "test": test}, self.split_path)
        return train, None, test

    def build_split(self):
        text_file = os.path.join(self.dataset_dir, "classnames.txt")
        classnames = read_classnames(text_file)
        # Standard practice: evaluate on the official val set, which is also the val split here.
        return self.read_data(classnames, "train", text_file), None, self.read_data(classnames, "val", text_file)

    def read_data(self, classnames: Dict[str, str], split_dir: str, text_file: str) -> List[Datum]:
        """Label = index of the wnid folder among the sorted sub-folders of `images/<split_dir>`."""
        split_dir = os.path.join(self.image_dir, split_dir)
        folders = sorted(f.name for f in os.scandir(split_dir) if f.is_dir())
        items = []
        for label, folder in enumerate(folders):
            classname = classname_of(classnames, folder, text_file)
            for imname in listdir_nohidden(os.path.join(split_dir, folder)):
                items.append(Datum(impath=os.path.join(split_dir, folder, imname), label=label, classname=classname))
        return items
