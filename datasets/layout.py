"""Where a dataset lives and whether its folder is complete: shared by the benchmark datasets, the ImageNet
test-only variants and `python -m datasets.check`, so the loaders and the checker give the same answer."""
import os
from typing import List

from dassl.utils.errors import UserError

# DATASET.ROOT left empty means this folder (relative to the working directory), which is also the
# default `$DATA` of the scripts; the official code would silently use the working directory itself.
DEFAULT_ROOT = "./data"
DOCS = "docs/DATASETS.md"


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A dataset folder, split file or annotation file is missing; the message says which and where to look."""


class DatasetFileError(UserError, ValueError):
    """A split or class-name file whose content is malformed; the message names the file and the entry."""


def resolve_root(cfg) -> str:
    return os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT or DEFAULT_ROOT))


def doc_reference(name: str) -> str:
    """The DATASETS.md section of a dataset (its heading is the registry name)."""
    return f"{DOCS}#{name.lower()}"


class DatasetLayout:
    """Mixin: a dataset class names its folder under DATASET.ROOT and says what must be inside it."""

    dataset_dir = ""  # folder under DATASET.ROOT

    @classmethod
    def locate(cls, cfg) -> str:
        """Absolute path of this dataset's folder."""
        return os.path.join(resolve_root(cfg), cls.dataset_dir)

    @classmethod
    def missing_pieces(cls, dataset_dir: str) -> List[str]:
        """Descriptions (with paths) of what is missing in `dataset_dir`; empty when the layout is complete."""
        raise NotImplementedError(f"{cls.__name__} must say what its folder has to contain")

    @classmethod
    def require_layout(cls, dataset_dir: str) -> None:
        missing = cls.missing_pieces(dataset_dir)
        if missing:
            pieces = "\n".join(f"  - {piece}" for piece in missing)
            raise DatasetNotFoundError(
                f"{cls.__name__}: dataset not found or incomplete at {dataset_dir}. Missing:\n{pieces}\n"
                f"See {doc_reference(cls.__name__)} for where to get it and the expected folder layout."
            )


def missing_paths(dataset_dir: str, relative_paths) -> List[str]:
    """The absolute paths among `relative_paths` (inside `dataset_dir`) that do not exist."""
    paths = (os.path.join(dataset_dir, p) for p in relative_paths)
    return [p for p in paths if not os.path.exists(p)]
