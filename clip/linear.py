"""Linear layers that are fast in fp16 on the CPU.

PyTorch's CPU matrix products in fp16 are 20-50 times slower than in fp32 for some operand layouts, the
transposed ones of a backward pass included (measured on this project's 2-core machine: a [770, 512] x
[512, 2048] linear layer, forward and backward, 0.92 s in fp16 against 0.027 s computed from fp32 copies).
That made `PREC fp16` (the official MaPLe file's only working precision) and `PREC amp` unusable on a CPU. On
the CPU, fp16 products (fp16 operands, or fp16 autocast) are therefore computed from the fp16 operands held in
fp32 and rounded back to fp16 once: fp16 operands with fp32 accumulation, which is what GPU fp16 matrix products
do. Other dtypes and devices call `F.linear` unchanged.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def _fp16_on_cpu(x: torch.Tensor) -> bool:
    if x.device.type != "cpu":
        return False
    autocast_fp16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16
    return x.dtype == torch.float16 or autocast_fp16


def _as_fp16_in_fp32(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The operand as an fp16 product sees it (rounded to fp16, as autocast rounds it), held in fp32."""
    return None if tensor is None else tensor.half().float()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """F.linear(x, weight, bias), with fp16 on the CPU computed in fp32 (see the module docstring)."""
    if _fp16_on_cpu(x):
        with torch.autocast("cpu", enabled=False):
            return F.linear(_as_fp16_in_fp32(x), _as_fp16_in_fp32(weight), _as_fp16_in_fp32(bias)).half()
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters and state-dict names) whose forward is `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
