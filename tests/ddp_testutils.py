"""Helpers for the distributed tests: a free TCP port, and the entry point of one spawned train.py process
(either a plain single-process run or one rank of a gloo run) that records what the test checks."""
from __future__ import annotations

import json
import os
import socket
import sys
from typing import Optional, Sequence

LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID",
               "SLURM_NTASKS", "SLURM_LOCALID")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _is_write(args: tuple) -> bool:
    _, mode, flags = args
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))


def _record_writes_under(folder: str, sink: list) -> None:
    """Audit every file this process creates, writes, renames or deletes under `folder` (Python's audit hooks
    see the opens of torch.save, tensorboard and tempfile alike)."""
    folder = os.path.realpath(folder)

    def inside(path) -> bool:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return False  # an open file descriptor
        real = os.path.realpath(os.fsdecode(path))
        return real == folder or real.startswith(folder + os.sep)

    def hook(event: str, args: tuple) -> None:
        if event == "open" and inside(args[0]) and _is_write(args):
            sink.append(f"open {args[0]}")
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir") and inside(args[0]):
            sink.append(f"{event} {args[0]}")

    sys.addaudithook(hook)


def run_train_process(argv: Sequence[str], report_dir: str, tag: str, rank: Optional[int] = None,
                      world_size: int = 1, port: int = 0, output_dir: str = "") -> None:
    """Run `train.main(argv)` in this (spawned) process with stdout captured in `<report_dir>/stdout-<tag>.txt`.
    With `rank` set it is that rank of a `world_size` gloo job on localhost:`port`; ranks > 0 also record their
    writes under `output_dir` in `<report_dir>/writes-<tag>.json`. The trainable parameters before and after
    training go to `<report_dir>/params-<tag>.pt`."""
    import torch

    torch.set_num_threads(1)
    stdout_file = open(os.path.join(report_dir, f"stdout-{tag}.txt"), "w")
    os.dup2(stdout_file.fileno(), 1)
    for name in LAUNCH_VARS:
        os.environ.pop(name, None)
    writes: list = []
    if rank is not None:
        os.environ.update(WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank),
                          LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        if rank > 0:
            _record_writes_under(output_dir, writes)

    import train
    from dassl.engine import SimpleTrainer

    initial = {}
    before_train = SimpleTrainer.before_train

    def snapshot_then_start(self) -> None:
        before_train(self)
        initial.update({k: p.detach().clone() for k, p in self.model.named_parameters() if p.requires_grad})

    SimpleTrainer.before_train = snapshot_then_start
    trainer = train.main(train.build_parser().parse_args(list(argv)))
    sys.stdout.flush()
    final = {k: p.detach().clone() for k, p in trainer.model.named_parameters() if p.requires_grad}
    torch.save({"initial": initial, "final": final}, os.path.join(report_dir, f"params-{tag}.pt"))
    with open(os.path.join(report_dir, f"writes-{tag}.json"), "w") as f:
        json.dump(writes, f)


def run_train_with_a_bad_loss(argv: Sequence[str], report_dir: str, tag: str, rank: int, world_size: int, port: int,
                              bad_rank: int, bad_batch: int) -> None:
    """One rank of a gloo run of `train.main(argv)` whose loss turns NaN at batch index `bad_batch` of the first
    epoch on rank `bad_rank` only; stderr goes to `<report_dir>/stderr-<tag>.txt`. The process exits with
    train.py's exit code."""
    import torch

    torch.set_num_threads(1)
    stderr_file = open(os.path.join(report_dir, f"stderr-{tag}.txt"), "w")
    os.dup2(stderr_file.fileno(), 2)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    for name in LAUNCH_VARS:
        os.environ.pop(name, None)
    os.environ.update(WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))

    import train
    from trainers.common import PromptTrainer

    training_loss = PromptTrainer.training_loss

    def diverging_loss(self, image, label):
        loss, logits = training_loss(self, image, label)
        if rank == bad_rank and self.epoch == 0 and self.batch_idx == bad_batch:
            loss = loss * float("nan")
        return loss, logits

    PromptTrainer.training_loss = diverging_loss
    train.main(train.build_parser().parse_args(list(argv)))
