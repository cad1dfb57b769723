"""`Datum` (one labelled image) and `DatasetBase` (train/val/test lists + few-shot sampling).

Module path, class name and the private attribute names of `Datum` are part of the on-disk format: the
few-shot caches (`split_fewshot/*.pkl`) and ImageNet's `preprocessed.pkl` pickle Datum instances, and pickle
restores them by `dassl.data.datasets.base_dataset.Datum` + the instance dict, without calling `__init__`.
"""
import random
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

from dassl.utils import check_isfile


class Datum:
    """An image path with its label, domain and class name."""

    def __init__(self, impath: str = "", label: int = 0, domain: int = 0, classname: str = "") -> None:
        if not isinstance(impath, str):
            raise TypeError(f"Datum impath must be a str, got {type(impath).__name__}: {impath!r}")
        if not check_isfile(impath):
            raise FileNotFoundError(f'Datum image not found: "{impath}"')
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname

    @property
    def impath(self) -> str:
        return self._impath

    @property
    def label(self) -> int:
        return self._label

    @property
    def domain(self) -> int:
        return self._domain

    @property
    def classname(self) -> str:
        return self._classname

    def __repr__(self) -> str:
        return f"Datum(impath={self._impath!r}, label={self._label}, domain={self._domain}, classname={self._classname!r})"


class DatasetBase:
    """Holds `train_x`, `train_u`, `val`, `test` lists of Datum; class count and names come from `train_x`."""

    dataset_dir = ""  # subclasses set the absolute dataset folder
    domains: List[str] = []

    def __init__(self, train_x=None, train_u=None, val=None, test=None) -> None:
        self._train_x = train_x
        self._train_u = train_u
        self._val = val
        self._test = test
        self._num_classes = self.get_num_classes(train_x)
        self._lab2cname, self._classnames = self.get_lab2cname(train_x)

    @property
    def train_x(self):
        return self._train_x

    @property
    def train_u(self):
        return self._train_u

    @property
    def val(self):
        return self._val

    @property
    def test(self):
        return self._test

    @property
    def lab2cname(self) -> Dict[int, str]:
        return self._lab2cname

    @property
    def classnames(self) -> List[str]:
        return self._classnames

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @staticmethod
    def get_num_classes(data_source: Sequence[Datum]) -> int:
        """max label + 1 (labels are assumed to be 0..n-1)."""
        if not data_source:
            raise ValueError("Cannot count classes of an empty data source (train_x is empty)")
        return max(item.label for item in data_source) + 1

    @staticmethod
    def get_lab2cname(data_source: Sequence[Datum]) -> Tuple[Dict[int, str], List[str]]:
        """label -> class name (sorted by label), and the class names in label order."""
        mapping: Dict[int, str] = {}
        for item in data_source:
            known = mapping.setdefault(item.label, item.classname)
            if known != item.classname:
                raise ValueError(
                    f"Label {item.label} has two class names: {known!r} and {item.classname!r} ({item.impath})"
                )
        mapping = dict(sorted(mapping.items()))
        return mapping, list(mapping.values())

    def check_input_domains(self, source_domains: Sequence[str], target_domains: Sequence[str]) -> None:
        self.is_input_domain_valid(source_domains)
        self.is_input_domain_valid(target_domains)

    def is_input_domain_valid(self, input_domains: Sequence[str]) -> None:
        for domain in input_domains:
            if domain not in self.domains:
                raise ValueError(f"Input domain must belong to {self.domains}, but got [{domain}]")

    def generate_fewshot_dataset(self, *data_sources, num_shots: int = -1, repeat: bool = False):
        """Keep `num_shots` items per label of each source (Dassl's algorithm, same RNG calls in the same order).

        Per source, labels are visited in order of first appearance; a label with at least `num_shots` items
        gets `random.sample(items, num_shots)`; a smaller one gets `random.choices(items, k=num_shots)` when
        `repeat`, else all its items (no RNG consumed). Returns one list for one source, a list of lists otherwise.
        `num_shots < 1` returns the input unchanged.
        """
        if num_shots < 1:
            return data_sources[0] if len(data_sources) == 1 else data_sources

        print(f"Creating a {num_shots}-shot dataset")
        output = []
        for data_source in data_sources:
            picked: List[Datum] = []
            for items in self.split_dataset_by_label(data_source).values():
                if len(items) >= num_shots:
                    picked.extend(random.sample(items, num_shots))
                elif repeat:
                    picked.extend(random.choices(items, k=num_shots))
                else:
                    picked.extend(items)
            output.append(picked)
        return output[0] if len(output) == 1 else output

    @staticmethod
    def split_dataset_by_label(data_source: Sequence[Datum]) -> Dict[int, List[Datum]]:
        """label -> items, labels in order of first appearance, items in source order."""
        groups: Dict[int, List[Datum]] = defaultdict(list)
        for item in data_source:
            groups[item.label].append(item)
        return groups

    @staticmethod
    def split_dataset_by_domain(data_source: Sequence[Datum]) -> Dict[int, List[Datum]]:
        """domain -> items, in order of first appearance."""
        groups: Dict[int, List[Datum]] = defaultdict(list)
        for item in data_source:
            groups[item.domain].append(item)
        return groups
