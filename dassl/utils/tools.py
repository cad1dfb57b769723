"""Small file-system, JSON, seeding, image and import helpers (Dassl's `dassl.utils.tools`)."""
import errno
import importlib
import json
import os
import os.path as osp
import pkgutil
import random
import warnings
from typing import Any, List

import numpy as np
import PIL
import torch
from PIL import Image

from .atomic import write_json_atomic


def set_cuda_math(exact_fp32: bool) -> None:
    """How CUDA computes fp32. Fast (default, as the official code): cuDNN benchmarks its convolution algorithms
    on the first call of each shape and picks the fastest, and convolutions run in TF32 (torch's default) on
    Ampere and newer GPUs: a 10-bit mantissa inside fp32 convolutions (CLIP's patch embedding, ResNet layers),
    so "fp32" is not bit-exact there and the chosen algorithm can vary between runs. Exact: IEEE fp32 in
    convolutions and matrix products, no algorithm search, deterministic cuDNN algorithms. Only the flags
    torch has had since 1.12 are written, so this works on every supported version."""
    torch.backends.cudnn.benchmark = not exact_fp32
    torch.backends.cudnn.deterministic = exact_fp32
    torch.backends.cudnn.allow_tf32 = not exact_fp32
    torch.backends.cuda.matmul.allow_tf32 = False  # torch's default: fp32 matrix products are IEEE fp32


def mkdir_if_missing(dirname: str) -> None:
    """Create `dirname` (and parents); an existing directory is fine."""
    if not osp.exists(dirname):
        try:
            os.makedirs(dirname)
        except OSError as e:
            # another process may have created it between the check and makedirs
            if e.errno != errno.EEXIST:
                # OSError(errno, ...) keeps the specific subclass (PermissionError, NotADirectoryError, ...)
                raise OSError(
                    e.errno, f'Cannot create the directory "{dirname}" ({e.strerror}); choose a writable location '
                    "(no part of the path may be an existing file)"
                ) from e


def check_isfile(fpath: str) -> bool:
    """True if `fpath` is a file; warns (does not raise) otherwise, as Dassl does."""
    isfile = osp.isfile(fpath)
    if not isfile:
        warnings.warn(f'No file found at "{fpath}"')
    return isfile


def read_json(fpath: str) -> Any:
    """Parse a JSON file; a damaged one raises ValueError naming it."""
    with open(fpath, "r") as f:
        try:
            return json.load(f)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            raise ValueError(
                f'"{fpath}" is not valid JSON ({e}); it is damaged or truncated — restore it, or delete it if it is a '
                "cache that can be rebuilt"
            ) from e


def write_json(obj: Any, fpath: str) -> None:
    """Dassl's JSON layout (indent 4, ", " / ": " separators), written atomically, creating the parent directory."""
    write_json_atomic(obj, fpath)


def set_random_seed(seed: int) -> None:
    """Seed Python `random` (few-shot sampling), NumPy and torch (data order, augmentation, init)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def collect_env_info() -> str:
    """torch's environment report plus the Pillow version."""
    from torch.utils.collect_env import get_pretty_env_info

    return get_pretty_env_info() + f"\n        Pillow ({PIL.__version__})"


def listdir_nohidden(path: str, sort: bool = False) -> List[str]:
    """Entries of `path` not starting with "." (optionally sorted)."""
    items = [f for f in os.listdir(path) if not f.startswith(".")]
    if sort:
        items.sort()
    return items


def tolist_if_not(x: Any) -> list:
    return x if isinstance(x, list) else [x]


def _sixteen_bit_to_rgb(img: Image.Image) -> Image.Image:
    # PIL's own "I;16" -> "RGB" conversion clips at 255 (nearly white images); scale the full range instead.
    arr = np.asarray(img, dtype=np.float64)
    arr = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, mode="L").convert("RGB")


def read_image(path: str) -> Image.Image:
    """Open an image as 8-bit RGB (grey, palette, RGBA, CMYK and 16-bit images are converted).

    Raises OSError naming `path` when the file is missing, truncated or not an image, so a broken file in a
    dataset is reported by name instead of as an anonymous DataLoader worker crash.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                return _sixteen_bit_to_rgb(img)
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:
        raise OSError(f'Cannot read image "{path}": {e}') from e


def import_submodules(package_name: str) -> List[str]:
    """Import every submodule of the package `package_name` (sorted by name) and return their full names.

    Used by `trainers/` and `datasets/` so that each module registers itself just by existing.
    """
    package = importlib.import_module(package_name)
    names = sorted(info.name for info in pkgutil.iter_modules(package.__path__))
    imported = []
    for name in names:
        full_name = f"{package_name}.{name}"
        importlib.import_module(full_name)
        imported.append(full_name)
    return imported
