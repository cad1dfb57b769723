"""The pipeline every benchmark dataset runs (PROTOCOL.md §3.1), implemented once:

1. locate `<DATASET.ROOT>/<dataset_dir>` and check that the pieces of its layout are there;
2. create `split_fewshot/` (unconditionally, as officially);
3. read the fixed split (`split_zhou_*.json`), or build it from the raw annotations and save it;
4. few-shot sampling (train K shots, val min(K, 4)) cached as `split_fewshot/shot_K-seed_S.pkl`;
5. base/new class subsampling with relabelling;
6. `DatasetBase(train_x=train, val=val, test=test)`.

A dataset module sets the class attributes that describe its layout and implements `build_split` (only
needed when the split JSON can be rebuilt from raw files).
"""
import os
import warnings
from collections import Counter
from typing import List, Optional, Sequence, Tuple

from dassl.data.datasets import Datum, DatasetBase
from dassl.utils import mkdir_if_missing

from .atomic import read_pickle, write_pickle_atomic
from .layout import DatasetLayout, DatasetNotFoundError, missing_paths
from .splits import check_subsample, read_split, save_split, subsample_classes

SplitsOrNoVal = Tuple[List[Datum], Optional[List[Datum]], List[Datum]]


class BenchmarkDataset(DatasetLayout, DatasetBase):
    image_dir_name = ""  # image folder inside the dataset folder, the prefix of the split paths ("" = the dataset folder)
    split_file = ""  # split JSON inside the dataset folder ("" = the dataset has none)
    required: Sequence[str] = ()  # paths inside the dataset folder that must exist (the images)
    raw_files: Sequence[str] = ()  # annotation files `build_split` reads when the split file is missing

    def __init__(self, cfg):
        check_subsample(cfg.DATASET.SUBSAMPLE_CLASSES)
        dataset_dir = self.locate(cfg)
        self.prepare(dataset_dir)
        self.require_layout(dataset_dir)

        self.dataset_dir = dataset_dir
        self.image_dir = os.path.join(dataset_dir, self.image_dir_name) if self.image_dir_name else dataset_dir
        self.split_path = os.path.join(dataset_dir, self.split_file) if self.split_file else ""
        self.split_fewshot_dir = os.path.join(dataset_dir, "split_fewshot")
        mkdir_if_missing(self.split_fewshot_dir)

        train, val, test = self.load_splits()
        train, val = self.few_shot(train, val, cfg.DATASET.NUM_SHOTS, cfg.SEED)
        subsample = cfg.DATASET.SUBSAMPLE_CLASSES
        if val is None:
            # ImageNet: no val split of its own; the test set serves as val after the same subsampling.
            train, test = subsample_classes(train, test, subsample=subsample)
            val = test
        else:
            train, val, test = subsample_classes(train, val, test, subsample=subsample)
        super().__init__(train_x=train, val=val, test=test)

    # --- layout -------------------------------------------------------------------------------------------
    def prepare(self, dataset_dir: str) -> None:
        """Hook run before the layout check (the generated demo dataset writes itself here)."""

    @classmethod
    def missing_pieces(cls, dataset_dir: str) -> List[str]:
        if not os.path.isdir(dataset_dir):
            return [f"dataset folder {dataset_dir}"]
        missing = missing_paths(dataset_dir, cls.required)
        if cls.split_file and not os.path.exists(os.path.join(dataset_dir, cls.split_file)):
            raw_missing = missing_paths(dataset_dir, cls.raw_files)
            if raw_missing or not cls.can_build_split():
                needed = f" (or, to rebuild it, {', '.join(raw_missing)})" if raw_missing else ""
                missing.append(f"split file {os.path.join(dataset_dir, cls.split_file)}{needed}")
        return missing

    @classmethod
    def can_build_split(cls) -> bool:
        return cls.build_split is not BenchmarkDataset.build_split

    # --- splits -------------------------------------------------------------------------------------------
    def load_splits(self) -> SplitsOrNoVal:
        """(train, val, test) as fixed by the split file; val None means "use test" (ImageNet)."""
        if os.path.exists(self.split_path):
            return read_split(self.split_path, self.image_dir)
        train, val, test = self.build_split()
        save_split(train, val, test, self.split_path, self.image_dir)
        return train, val, test

    def build_split(self) -> Tuple[List[Datum], List[Datum], List[Datum]]:
        """Build the split from the raw annotations (consumes Python `random` as the official code does)."""
        raise DatasetNotFoundError(f"{type(self).__name__}: split file {self.split_path} not found and it cannot be rebuilt here.")

    def few_shot(self, train: List[Datum], val: Optional[List[Datum]], num_shots: int, seed: int):
        """K-shot train and min(K, 4)-shot val, cached per (K, seed); val None is passed through (ImageNet)."""
        if num_shots < 1:
            return train, val
        cache = os.path.join(self.split_fewshot_dir, f"shot_{num_shots}-seed_{seed}.pkl")
        if os.path.exists(cache):
            print(f"Loading preprocessed few-shot data from {cache}")
            data = read_pickle(cache)
            return data["train"], (data["val"] if val is not None else None)

        warn_short_classes(train, num_shots, f"{type(self).__name__} train")
        train = self.generate_fewshot_dataset(train, num_shots=num_shots)
        data = {"train": train}
        if val is not None:
            warn_short_classes(val, min(num_shots, 4), f"{type(self).__name__} val")
            val = self.generate_fewshot_dataset(val, num_shots=min(num_shots, 4))
            data["val"] = val
        print(f"Saving preprocessed few-shot data to {cache}")
        write_pickle_atomic(data, cache)
        return train, val


def warn_short_classes(items: List[Datum], num_shots: int, what: str) -> None:
    """Warn about classes with fewer than `num_shots` items: the sampler keeps all of them (official behaviour,
    kept so the numbers stay identical), which silently unbalances the few-shot set."""
    counts = Counter(item.label for item in items)
    names = {item.label: item.classname for item in items}
    short = [f"{names[label]!r} ({n})" for label, n in counts.items() if n < num_shots]
    if short:
        warnings.warn(
            f"{what}: {len(short)} class(es) have fewer than {num_shots} images and keep all they have: "
            + ", ".join(short),
            stacklevel=2,
        )
