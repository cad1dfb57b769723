"""Helpers for the trainer tests: configs built through train.py's own config path, trainers on the Demo
dataset with the tiny random backbone, and bare prompt models built from a random state dict."""
from __future__ import annotations

import glob
import os
from typing import Callable, Sequence

import torch

import train
from clip import clip
from clip.random_models import random_state_dict
from dassl.engine import build_trainer
from dassl.utils import set_random_seed
from trainers.common import SpeedOptions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "RandomInit-ViT-Tiny"
# the config side of the `exact_text` fixture (tests/conftest.py): the trainers' text plans without truncation
EXACT_TEXT = ("TRAINER.SPEEDUPS.TEXT_TRUNCATION", "False", "TRAINER.SPEEDUPS.SHARED_PREFIX", "False")


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


def colors_trainer(trainer: str, config: str, root: str, output_dir: str, *opts: str):
    """`trainer` with the config `config` (under configs/trainers/) on the TinyColors dataset of
    dassl_testutils.make_color_dataset at `root` (2 shots), seeded: two trainers built so from the same
    arguments draw the same initial prompts (the official-style comparisons)."""
    cfg = method_cfg(config, "TRAINER.NAME", trainer, "DATASET.NAME", "TinyColors", "DATASET.ROOT", root,
                     "DATASET.NUM_SHOTS", "2", "OUTPUT_DIR", output_dir, *opts)
    set_random_seed(1)
    return build_trainer(cfg)


def coop_context(trainer) -> dict:
    """What a CoOp-style trainer learns: its model's `prompt_learner.ctx`."""
    return {"ctx": trainer.model.prompt_learner.ctx}


def assert_steps_agree(mine, official, trained: Callable[[object], dict] = coop_context, steps: int = 3,
                       images: int = 8, tolerance: float = 5e-6, moved: float = 1e-3) -> None:
    """Train two trainers on the same batches (`mine`'s loader) for `steps` steps and assert that before and after
    each their evaluation logits on the first `images` test images, every loss of their step summaries and the
    trained tensors (`trained(trainer)`: name -> tensor, the same names for both) agree to `tolerance` (relative
    and absolute); then that the steps moved the logits by more than `moved`, so the agreement is not that of two
    models left where they started."""
    from scripts.compare_trainers import eval_logits, train_step

    image = next(iter(mine.test_loader))["img"][:images]
    before = eval_logits(mine, image)
    torch.testing.assert_close(eval_logits(official, image), before, rtol=tolerance, atol=tolerance)
    batches = iter(mine.train_loader_x)
    for step in range(1, steps + 1):
        batch = next(batches, None) or next(iter(mine.train_loader_x))
        losses, official_losses = train_step(mine, batch), train_step(official, batch)
        assert losses and losses.keys() == official_losses.keys(), (sorted(losses), sorted(official_losses))
        for name, value in losses.items():
            assert abs(value - official_losses[name]) <= tolerance * max(1.0, abs(value)), (
                f"{name} at step {step}: {value} against {official_losses[name]}")
        ours, theirs = trained(mine), trained(official)
        assert ours.keys() == theirs.keys(), (sorted(ours), sorted(theirs))
        for name in ours:
            torch.testing.assert_close(ours[name], theirs[name], rtol=tolerance, atol=tolerance,
                                       msg=f"{name} after step {step}")
        torch.testing.assert_close(eval_logits(official, image), eval_logits(mine, image), rtol=tolerance,
                                   atol=tolerance, msg=f"logits after step {step}")
    assert not torch.allclose(eval_logits(mine, image), before, atol=moved)
