"""Helpers for the trainer tests: configs built through train.py's own config path, trainers on the Demo
dataset with the tiny random backbone, and bare prompt models built from a random state dict."""
from __future__ import annotations

import glob
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


def registered_cases() -> list:
    """(trainer, config under configs/trainers/, its MethodSpec) for every registered trainer whose config folder
    holds tiny configs (else demo ones), one case per such file: the generic tests' list, read from the registry,
    so that a new method's file and YAML are all it takes to be covered."""
    from trainers.method import registered_specs

    cases = []
    for name, spec in sorted(registered_specs().items()):
        folder = os.path.join(REPO, "configs", "trainers", spec.config_dir)
        configs = sorted(glob.glob(os.path.join(folder, "tiny*.yaml"))) or sorted(glob.glob(os.path.join(folder, "demo*.yaml")))
        cases += [(name, os.path.relpath(path, os.path.join(REPO, "configs", "trainers")), spec) for path in configs]
    return cases


# (trainer name, config, precision key) of the registered trainers built on a prompted CLIP (the linear probe, a
# one-pass fit, has tests of its own)
DEMO_TRAINERS = [(name, config, spec.precision_key) for name, config, spec in registered_cases() if spec.training != "fit"]


def demo_args(trainer: str, config: str, root: str, output_dir: str, *opts: str, extra: Sequence[str] = ()) -> list:
    """train.py command-line arguments for `trainer` on the Demo dataset (few shots, one epoch by default)."""
    return ["--root", root, "--seed", "1", "--trainer", trainer,
            "--dataset-config-file", os.path.join(REPO, "configs/datasets/demo.yaml"),
            "--config-file", os.path.join(REPO, "configs/trainers", config),
            "--output-dir", output_dir, *extra,
            "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", "1", *opts]


def demo_trainer(trainer: str, config: str, root: str, output_dir: str, *opts: str, imports: Sequence[str] = ()):
    """A trainer built from the same config as `python train.py <demo_args>` (seeded like train.py); `imports`:
    train.py's --import modules (an official-style file with a module-level extend_cfg)."""
    extra = [arg for module in imports for arg in ("--import", module)]
    args = train.build_parser().parse_args(demo_args(trainer, config, root, output_dir, *opts, extra=extra))
    train.import_plugins(args.imports or [])
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


def eval_logits(trainer, image: torch.Tensor) -> torch.Tensor:
    """The trainer's model's fp32 logits of `image` in eval mode, without gradients."""
    trainer.set_model_mode("eval")
    with torch.no_grad():
        return trainer.model(image).float()


def train_step(trainer, batch: dict) -> float:
    """One forward_backward in train mode, mid-epoch (no LR step); the loss."""
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 2
    return float(trainer.forward_backward(batch)["loss"])


def assert_steps_agree(mine, theirs, image: torch.Tensor, trained, steps: int = 4, tol: float = 5e-6) -> None:
    """Step both trainers on the same batches (`mine`'s loader): after each step the losses, the trained tensors
    (`trained(trainer)`: a dict of name -> tensor, the same names for both) and the eval logits of `image` agree
    within `tol` (relative, and absolute near zero)."""
    batches = iter(mine.train_loader_x)
    for step in range(steps):
        batch = next(batches, None) or next(iter(mine.train_loader_x))
        loss_mine, loss_theirs = train_step(mine, batch), train_step(theirs, batch)
        assert abs(loss_mine - loss_theirs) <= tol * max(1.0, abs(loss_theirs)), f"step {step + 1}"
        ours, others = trained(mine), trained(theirs)
        assert ours.keys() == others.keys()
        for name in ours:
            torch.testing.assert_close(ours[name], others[name], rtol=tol, atol=tol, msg=f"{name} after step {step + 1}")
        torch.testing.assert_close(eval_logits(theirs, image), eval_logits(mine, image), rtol=tol, atol=tol)
