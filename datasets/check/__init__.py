"""Check which datasets are in place under a data root: `python -m datasets.check --root DATA [names]`.

For each dataset: "found" with the number of classes and images per split, or "missing" with each missing
path and the DATASETS.md section to read. Loading a found dataset is exactly what the first training run
does (it may write the same files: `split_fewshot/`, a missing `split_zhou_*.json`, ImageNet's
`preprocessed.pkl`), so a dataset that passes here loads in training.
"""
import contextlib
import glob
import io
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import yaml
from yacs.config import CfgNode

from dassl.config import get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY
from dassl.utils.errors import UsageError

from ..layout import DEFAULT_ROOT, doc_reference

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs", "datasets")
# Registered datasets that are not downloaded benchmarks: the user's own folder, and those generated on first use
# (the demo and its transfer targets: classes with a `data` generator, datasets/world_data.py).
NOT_BENCHMARKS = ("ImageFolder",)


def is_benchmark(name: str) -> bool:
    return name not in NOT_BENCHMARKS and not hasattr(DATASET_REGISTRY.get(name), "data")


@dataclass
class DatasetStatus:
    name: str
    path: str
    missing: List[str] = field(default_factory=list)
    error: str = ""
    num_classes: int = 0
    counts: Dict[str, Optional[int]] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return not self.missing and not self.error


def config_names() -> Dict[str, str]:
    """Config file stem (e.g. `oxford_pets`) -> registry name (e.g. `OxfordPets`), from configs/datasets/*.yaml."""
    names = {}
    for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml"))):
        with open(path) as f:
            names[os.path.splitext(os.path.basename(path))[0]] = yaml.safe_load(f)["DATASET"]["NAME"]
    return names


def resolve_names(requested: Sequence[str]) -> List[str]:
    """Registry names for config stems or registry names (case-insensitive); none requested = every benchmark."""
    stems = config_names()
    if not requested:
        return [name for name in stems.values() if is_benchmark(name)]
    lookup = {key.lower(): name for key, name in stems.items()}
    lookup.update({name.lower(): name for name in DATASET_REGISTRY.registered_names()})
    unknown = [r for r in requested if r.lower() not in lookup]
    if unknown:
        raise UsageError(
            f"Unknown dataset(s): {', '.join(unknown)}. Valid: {', '.join(sorted(set(stems) | set(lookup.values())))}"
        )
    return [lookup[r.lower()] for r in requested]


def loading_cfg(root: str) -> CfgNode:
    """train.py's config with every key a dataset class may read (the datasets' own keys too, e.g.
    DATASET.IMAGE_FOLDER), set to load the whole split: no few-shot, all classes."""
    from trainers.config import extend_cfg

    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.SEED = -1
    cfg.DATASET.ROOT = root
    cfg.DATASET.NUM_SHOTS = -1
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    return cfg


def check_dataset(name: str, root: str) -> DatasetStatus:
    cls = DATASET_REGISTRY.get(name)
    cfg = loading_cfg(root)
    status = DatasetStatus(name=name, path=cls.locate(cfg))
    status.missing = cls.missing_pieces(status.path)
    if status.missing:
        return status
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            dataset = cls(cfg)
    except Exception as error:  # report every failure of one dataset and go on with the next
        status.error = f"{type(error).__name__}: {error}"
        return status
    status.num_classes = dataset.num_classes
    status.counts = {
        "train": len(dataset.train_x),
        "val": None if dataset.val is None or dataset.val is dataset.test else len(dataset.val),
        "test": len(dataset.test),
    }
    return status


def format_status(status: DatasetStatus) -> str:
    if status.found:
        counts = "  ".join(
            f"{split} {'-' if n is None else format(n, ',')}" for split, n in status.counts.items()
        )
        return f"{status.name:<20} found    {status.path}\n{'':<29}{status.num_classes} classes  {counts}"
    lines = [f"{status.name:<20} missing  {status.path}"]
    lines += [f"{'':<29}- {piece}" for piece in status.missing]
    if status.error:
        lines.append(f"{'':<29}- {status.error}")
    lines.append(f"{'':<29}see {doc_reference(status.name)}")
    return "\n".join(lines)


def run(root: str, names: Sequence[str]) -> List[DatasetStatus]:
    return [check_dataset(name, root) for name in resolve_names(names)]


def default_root() -> str:
    return os.environ.get("DATA", DEFAULT_ROOT)
