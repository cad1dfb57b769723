"""Helpers for the dassl tests: tiny image datasets written to tmp_path and configs for them."""
import os
import random
from typing import Dict, List

import numpy as np
from PIL import Image

# class name -> base RGB colour; the tiny dataset is learnable from mean colour alone
COLORS: Dict[str, tuple] = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def make_color_dataset(root: str, per_class: int = 10, size: int = 20, seed: int = 0) -> List[str]:
    """Write `<root>/tiny_colors/<class>/<i>.png` noisy solid-colour images; returns the class names."""
    rng = np.random.RandomState(seed)
    for classname, color in COLORS.items():
        folder = os.path.join(root, "tiny_colors", classname)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            noise = rng.randint(-25, 25, size=(size, size + 4, 3))
            arr = np.clip(np.array(color)[None, None, :] + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(os.path.join(folder, f"{i:03d}.png"))
    return list(COLORS)


def write_image_files(folder: str, n: int) -> List[str]:
    """`n` tiny RGB PNG files (for Datum, which checks that its file exists)."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(n):
        path = os.path.join(folder, f"img_{i:04d}.png")
        Image.new("RGB", (4, 4), (i % 256, 0, 0)).save(path)
        paths.append(path)
    return paths


def shuffled_labels(n_items: int, n_labels: int, seed: int) -> List[int]:
    """Labels for `n_items` items, every label present, in a shuffled (non-sorted) order."""
    rng = random.Random(seed)
    labels = [i % n_labels for i in range(n_items)]
    rng.shuffle(labels)
    return labels


def set_keys(cfg, changes: Dict[str, object]) -> None:
    """Set dotted config keys ("OPTIM.LR") to values, in place."""
    for key, value in changes.items():
        node = cfg
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value


def lr_per_epoch(optim_cfg, epochs: int) -> List[float]:
    """The LR each epoch runs at under an OPTIM config, the scheduler stepped once per epoch (as the trainers do)."""
    import torch.nn as nn
    from dassl.optim import build_lr_scheduler, build_optimizer
    optimizer = build_optimizer(nn.Linear(2, 2), optim_cfg)
    scheduler = build_lr_scheduler(optimizer, optim_cfg)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs
