"""The training losses of the steps since the last log line, kept where the trainer computed them.

Reading a loss on the host (`loss.item()`, `if not torch.isfinite(loss)`) makes the CPU wait for the GPU to
finish the step, every step. The epoch loop instead keeps each step's loss summary (0-dim tensors, or the
numbers an official-style trainer returns) and reads all of them at once at the next log line: one transfer
per `TRAIN.PRINT_FREQ` steps. In a distributed run that transfer is preceded by one all-reduce that averages
the summaries over the processes; a NaN or inf on any process survives the average, so every process sees it
at the same step and stops with the same error, instead of one process raising while the others wait in the
next gradient all-reduce.

A non-finite loss is therefore reported at the log line after it happened, naming its own batch; the steps in
between may have updated the prompts with non-finite gradients, which does not matter because training stops
before anything is saved (checkpoints are written after the epoch's last batch, which is always read).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Union

import torch

from dassl.utils.distributed import average_over_processes, get_world_size, is_distributed

Number = Union[int, float, torch.Tensor]


@dataclass
class LoggedStep:
    """One training step's summary, read on the host."""

    batch_idx: int
    lr: float
    values: Dict[str, float]


def nonfinite_loss_error(epoch: int, max_epoch: int, batch_idx: int, num_batches: int,
                         detail: str) -> FloatingPointError:
    """The one error every non-finite-loss stop raises (on every process alike)."""
    return FloatingPointError(
        f"Loss is infinite or NaN! at epoch [{epoch + 1}/{max_epoch}] batch [{batch_idx + 1}/{num_batches}]; "
        f"training stopped, earlier checkpoints are kept (lower OPTIM.LR or use TRAINER.<NAME>.PREC fp32/amp); {detail}"
    )


class PendingLosses:
    """Loss summaries (`forward_backward`'s dicts) of the steps not yet read on the host."""

    def __init__(self) -> None:
        self._steps: List[tuple] = []

    def __len__(self) -> int:
        return len(self._steps)

    def add(self, batch_idx: int, lr: float, summary: Optional[Mapping[str, Number]]) -> None:
        """Keep a step's summary without reading its tensors (no host-device synchronisation)."""
        if summary is None:
            summary = {}
        if not isinstance(summary, Mapping):
            raise TypeError(f"forward_backward must return a dict of losses/metrics, got {type(summary).__name__}")
        values = {}
        for key, value in summary.items():
            if torch.is_tensor(value):
                if value.numel() != 1:
                    raise ValueError(f"forward_backward returned {key!r} with shape {tuple(value.shape)}; the "
                                     "summary holds one number per key")
                value = value.detach().reshape(())
            values[key] = value
        self._steps.append((batch_idx, lr, values))

    def read(self, device: torch.device) -> List[LoggedStep]:
        """Every kept step, in order, with numbers on the host (averaged over the processes when distributed),
        and forget them. One transfer (and, distributed, one all-reduce) for all of them."""
        steps, self._steps = self._steps, []
        flat = [value for _, _, values in steps for value in values.values()]
        numbers = _to_host(flat, device)
        logged, position = [], 0
        for batch_idx, lr, values in steps:
            logged.append(LoggedStep(batch_idx, lr, dict(zip(values, numbers[position:position + len(values)]))))
            position += len(values)
        return logged


def _to_host(values: list, device: torch.device) -> List[float]:
    # Plain numbers and tensors go into one float64 tensor on the device (float64 keeps every float32 loss and
    # every Python float exact, so the figures equal `loss.item()`'s), which is averaged and read at once.
    if not values:
        return []
    numbers = torch.tensor([0.0 if torch.is_tensor(v) else float(v) for v in values], dtype=torch.float64).to(device)
    tensor_at = [i for i, v in enumerate(values) if torch.is_tensor(v)]
    if tensor_at:
        numbers[tensor_at] = torch.stack([values[i].to(device, torch.float64) for i in tensor_at])
    return average_over_processes(numbers).tolist()


def loss_detail(key: str, number: float) -> str:
    """`key = number`, saying when the number is the mean over the processes."""
    averaged = f" (mean over {get_world_size()} processes)" if is_distributed() else ""
    return f"{key} = {number}{averaged}"


def check_finite(step: LoggedStep, epoch: int, max_epoch: int, num_batches: int) -> None:
    """Raise the non-finite-loss error for the first key of `step` that is NaN or inf."""
    for key, number in step.values.items():
        if not math.isfinite(number):
            raise nonfinite_loss_error(epoch, max_epoch, step.batch_idx, num_batches, loss_detail(key, number))
