"""Helpers for the trainer tests: configs built through train.py's own config path, trainers on the Demo
dataset with the tiny random backbone, and bare prompt models built from a random state dict."""
from __future__ import annotations

import os
from typing import Sequence

import torch

import train
from clip import clip
from clip.random_models import random_state_dict
from dassl.engine import build_trainer
from dassl.utils import set_random_seed
from trainers.common import SpeedOptions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "RandomInit-ViT-Tiny"
# (trainer name, demo config, precision key)
DEMO_TRAINERS = [
    ("CoOp", "CoOp/tiny.yaml", "TRAINER.COOP.PREC"),
    ("CoCoOp", "CoCoOp/tiny.yaml", "TRAINER.COCOOP.PREC"),
    ("MaPLe", "MaPLe/tiny.yaml", "TRAINER.MAPLE.PREC"),
    ("IVLP", "IVLP/tiny.yaml", "TRAINER.IVLP.PREC"),
    ("IVLP", "IVLP/tiny_language_only.yaml", "TRAINER.IVLP.PREC"),
    ("VPT", "VPT/tiny.yaml", "TRAINER.VPT.PREC"),
    ("ZeroshotCLIP", "CoOp/tiny.yaml", "TRAINER.COOP.PREC"),
    ("ZeroshotCLIP2", "CoOp/tiny.yaml", "TRAINER.COOP.PREC"),
]


def demo_args(trainer: str, config: str, root: str, output_dir: str, *opts: str, extra: Sequence[str] = ()) -> list:
    """train.py command-line arguments for `trainer` on the Demo dataset (few shots, one epoch by default)."""
    return ["--root", root, "--seed", "1", "--trainer", trainer,
            "--dataset-config-file", os.path.join(REPO, "configs/datasets/demo.yaml"),
            "--config-file", os.path.join(REPO, "configs/trainers", config),
            "--output-dir", output_dir, *extra,
            "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", "1", *opts]


def demo_trainer(trainer: str, config: str, root: str, output_dir: str, *opts: str):
    """A trainer built from the same config as `python train.py <demo_args>` (seeded like train.py)."""
    args = train.build_parser().parse_args(demo_args(trainer, config, root, output_dir, *opts))
    train.import_plugins([])
    cfg = train.setup_cfg(args)
    set_random_seed(cfg.SEED)
    return build_trainer(cfg)


def method_cfg(config: str, *opts: str):
    """The config of a trainer YAML (for building prompt learners without a dataset)."""
    args = train.build_parser().parse_args(["--config-file", os.path.join(REPO, "configs/trainers", config), *opts])
    train.import_plugins([])
    return train.setup_cfg(args)


def fp32_clip(name: str = TINY):
    return clip.build_model(random_state_dict(name)).float().eval()


def options(**changes) -> SpeedOptions:
    return SpeedOptions(**changes)


def clip_state(model) -> dict:
    """Copies of the frozen CLIP weights, to compare before/after training."""
    return {k: v.detach().clone() for k, v in model.clip_model.state_dict().items()}


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
