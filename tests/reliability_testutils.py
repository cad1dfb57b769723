"""Helpers for the reliability tests: demo-config trainers built in-process, small ImageFolder datasets with
awkward images, and a fingerprint of a folder tree to prove that a failure damaged nothing on disk."""
import hashlib
import os
import sys
from typing import Dict, Sequence

import numpy as np
import pytest
from PIL import Image

import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_cfg(data_root: str, output_dir: str, *opts: str, trainer: str = "CoOp", dataset: str = "demo"):
    """The frozen config train.py builds for a demo run of `trainer` (plus KEY VALUE `opts`)."""
    train.import_plugins([])
    args = train.build_parser().parse_args([
        "--root", data_root, "--output-dir", output_dir, "--trainer", trainer, "--seed", "1",
        "--dataset-config-file", os.path.join(ROOT, "configs", "datasets", f"{dataset}.yaml"),
        "--config-file", os.path.join(ROOT, "configs", "trainers", trainer, "tiny.yaml"),
        "DATASET.NUM_SHOTS", "2", *opts,
    ])
    return train.setup_cfg(args)


def tree_fingerprint(folder: str) -> Dict[str, str]:
    """{relative path: SHA-256} of every file under `folder`."""
    result = {}
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                result[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return result


def odd_image(mode: str, seed: int) -> Image.Image:
    """A 12x12 image in `mode` ("L", "P", "RGBA", "CMYK", "I;16", "RGB") with seeded content."""
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (12, 12), dtype=np.uint16))
    rgb = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    return rgb.convert(mode)


def make_image_folder(folder: str, classes: Sequence[str], modes: Sequence[str], per_class: int = 10) -> None:
    """`<folder>/<class>/<i>.png` (CMYK as JPEG, which PNG cannot hold); class i's images are in modes[i]."""
    for label, (classname, mode) in enumerate(zip(classes, modes)):
        os.makedirs(os.path.join(folder, classname), exist_ok=True)
        for i in range(per_class):
            extension = "jpg" if mode == "CMYK" else "png"
            odd_image(mode, label * 100 + i).save(os.path.join(folder, classname, f"{i}.{extension}"))


def train_py(*argv: str):
    """train.main in this process, with stdout restored afterwards (train.py tees it into the run's log.txt)."""
    stdout = sys.stdout
    try:
        return train.main(train.build_parser().parse_args(list(argv)))
    finally:
        if sys.stdout is not stdout:
            sys.stdout.close()
            sys.stdout = stdout


def train_py_error(capsys, *argv: str) -> str:
    """The one stderr line of a train.py call that must end with a user error: exit status 2, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        train_py(*argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("train.py: error: ") and "Traceback" not in err, err
    return err.strip()
