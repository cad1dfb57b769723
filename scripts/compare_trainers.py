"""Compare a trainer file of another repository with this project's trainer, step by step.

    python -m scripts.compare_trainers --import trainers.maple --trainer MaPLe <train.py arguments> [KEY VALUE ...]

builds the trainer twice from the same train.py arguments and seed: this project's (`--ours NAME`, default the
`--trainer` name) before the `--import` modules are imported, then the imported file's. Both are fed the same
training batches; before the first step and after each of `--steps` steps it prints, for the first `--images`
test images, the largest difference of the two models' logits relative to their largest logit and the share of
images whose top class agrees, and each step's losses (`loss`, or each `*_loss` both summaries hold). In fp32 with the same computation the differences are
0; files that keep their prompts in fp16 agree to fp16 rounding. Runs on the CPU keep the imported files'
`.cuda()` calls on the CPU, as train.py does.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch

import train
from dassl.engine import TRAINER_REGISTRY, build_trainer, plugins
from dassl.utils import set_random_seed
from dassl.utils.errors import UsageError, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts.compare_trainers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--ours", default="", help="this project's trainer to compare with (default: --trainer)")
    parser.add_argument("--steps", type=int, default=4, help="training steps (default 4)")
    parser.add_argument("--images", type=int, default=50, help="test images whose logits are compared (default 50)")
    return parser


def _without_imports(arguments: list[str]) -> list[str]:
    """train.py arguments less their --import modules (either spelling: `--import M`, `--import=M`)."""
    kept, skip = [], False
    for item in arguments:
        if skip:
            skip = False
        elif item == "--import":
            skip = True
        elif not item.startswith("--import="):
            kept.append(item)
    return kept


def _build(arguments: list[str], imports: Sequence[str], trainer: str):
    args = train.build_parser().parse_args(arguments)
    train.import_plugins(list(imports))
    cfg = train.setup_cfg(args)
    cfg.defrost()
    cfg.TRAINER.NAME, cfg.OUTPUT_DIR = trainer, ""
    cfg.freeze()
    train.check_registered("trainer", trainer, TRAINER_REGISTRY)
    set_random_seed(cfg.SEED)
    return build_trainer(cfg), args


def eval_logits(trainer, images: torch.Tensor) -> torch.Tensor:
    """The trainer's evaluation logits of `images` (fp32, on the CPU)."""
    trainer.set_model_mode("eval")
    with torch.no_grad():
        return trainer.model_inference(images.to(trainer.device)).float().cpu()


def train_step(trainer, batch: dict) -> dict[str, float]:
    """One training step on `batch`; the losses of its summary: `loss` and every `*_loss` (ProGrad's files log
    `xe_loss` and `kl_loss` and no `loss`)."""
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 2  # mid-epoch: no per-epoch LR step
    summary = trainer.forward_backward(batch)
    return {name: float(value) for name, value in summary.items() if name == "loss" or name.endswith("_loss")}


def _losses_line(step: int, mine: dict[str, float], other: dict[str, float]) -> str:
    shared = [name for name in mine if name in other]
    if not shared:
        raise UsageError(f"the two trainers' step summaries share no loss to compare: ours {sorted(mine)}, "
                         f"theirs {sorted(other)}")
    return f"step {step}: " + "; ".join(f"{name} ours {mine[name]:.6f}, theirs {other[name]:.6f}" for name in shared)


def compare(ours, theirs, batches, images: torch.Tensor, steps: int) -> list[str]:
    """The report lines of `steps` steps of both trainers on `batches` (an iterator of training batches)."""
    lines = []
    for step in range(steps + 1):
        mine, other = eval_logits(ours, images), eval_logits(theirs, images)
        difference = float((other - mine).abs().max() / mine.abs().max())
        agree = float((other.argmax(dim=1) == mine.argmax(dim=1)).float().mean())
        lines.append(f"after {step} steps: logits differ by {difference:.2e} of the largest; top class agrees "
                     f"for {agree:.1%} of {len(images)} images")
        if step < steps:
            batch = next(batches)
            lines.append(_losses_line(step + 1, train_step(ours, batch), train_step(theirs, batch)))
    return lines


def run(own: argparse.Namespace, rest: list[str]) -> int:
    args = train.build_parser().parse_args(rest)
    if not args.imports:
        raise UsageError("give the other repository's module with --import (the file compared with ours)")
    if not args.trainer:
        raise UsageError("give --trainer: the name the imported file registers")
    if own.steps < 0 or own.images < 1:
        raise UsageError("--steps must be >= 0 and --images >= 1")
    ours, _ = _build(_without_imports(rest), [], own.ours or args.trainer)
    with plugins.cuda_calls_kept_on_cpu(plugins.keeps_cuda_calls_on_cpu(args.imports, ours.cfg.USE_CUDA)):
        theirs, _ = _build(rest, args.imports, args.trainer)
        images = next(iter(ours.test_loader))["img"][:own.images]
        for line in compare(ours, theirs, iter(ours.train_loader_x), images, own.steps):
            print(line)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    own, rest = build_parser().parse_known_args(argv)
    return run_command("compare_trainers", lambda: run(own, rest))


if __name__ == "__main__":
    sys.exit(main())
