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


# Integer sample modes and the full scale of their values; "I" (32-bit signed) images usually hold 16-bit data
# (16-bit PNGs and TIFFs open as "I"), so values that fit 16 bits are read as 16-bit, others over 31 bits.
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
_SIXTEEN_BIT_MAX = 65535
_INT32_MAX = 2**31 - 1
# Environment variable that sets PIL's decompression-bomb limit (pixels; 0 = no limit) for a trusted dataset of
# very large images; PIL refuses images of more than twice its limit (default about 179 million pixels).
MAX_PIXELS_ENV = "PROMPTCLIP_MAX_IMAGE_PIXELS"


def _scaled_to_rgb(values: np.ndarray, full_scale: float) -> Image.Image:
    grey = np.clip(np.rint(values * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB of any PIL image. PIL's own conversion clips high-bit-depth values at 255 (16- and 32-bit integer
    images come out nearly white) and truncates floats (a [0, 1] float image comes out black); those are scaled
    over their full range instead: 16-bit integers over 0..65535, 32-bit integers over 0..65535 when they fit
    16 bits (16-bit PNG / TIFF files open as 32-bit) else over 0..2^31-1, floats over 0..1 (clipped)."""
    if img.mode in _SIXTEEN_BIT_MODES:
        return _scaled_to_rgb(np.asarray(img, dtype=np.float64), _SIXTEEN_BIT_MAX)
    if img.mode == "I":
        values = np.asarray(img, dtype=np.float64)
        fits_16_bits = values.size == 0 or (values.min() >= 0 and values.max() <= _SIXTEEN_BIT_MAX)
        return _scaled_to_rgb(values, _SIXTEEN_BIT_MAX if fits_16_bits else _INT32_MAX)
    if img.mode == "F":
        return _scaled_to_rgb(np.nan_to_num(np.asarray(img, dtype=np.float64)), 1.0)
    return img.convert("RGB")


def _apply_pixel_limit() -> None:
    value = os.environ.get(MAX_PIXELS_ENV, "")
    if not value:
        return
    try:
        limit = int(value)
    except ValueError:
        raise OSError(f"{MAX_PIXELS_ENV} must be a whole number of pixels (0 = no limit); got {value!r}") from None
    Image.MAX_IMAGE_PIXELS = limit if limit > 0 else None


def read_image(path: str) -> Image.Image:
    """Open an image as 8-bit RGB (every PIL mode converted by `to_rgb`, high bit depths scaled).

    Raises OSError naming `path` when the file is missing, truncated, not an image, or larger than PIL's
    decompression-bomb limit, so a broken file in a dataset is reported by name instead of as an anonymous
    DataLoader worker crash.
    """
    _apply_pixel_limit()
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except Image.DecompressionBombError as e:
        raise OSError(f'Cannot read image "{path}": {e}; if the file is trusted, raise the limit with the environment '
                      f"variable {MAX_PIXELS_ENV}=<pixels> (0 = no limit)") from e
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
