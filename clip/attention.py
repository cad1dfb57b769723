"""Scaled dot-product attention with a switch between the fused kernel and the explicit formula.

The fused path (`torch.nn.functional.scaled_dot_product_attention`) is the default. The explicit path,
softmax(Q K^T / sqrt(d) + mask) V, exists so benchmarks can run a "plain" mode with every speed-up off and
so tests can check that both give the same numbers.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

_fused_enabled = True


def set_fused_attention(enabled: bool) -> None:
    """Choose the fused SDPA kernel (True, default) or the explicit softmax formula (False) process-wide."""
    global _fused_enabled
    _fused_enabled = bool(enabled)


def fused_attention_enabled() -> bool:
    return _fused_enabled


@contextlib.contextmanager
def fused_attention(enabled: bool) -> Iterator[None]:
    """Temporarily switch the attention path; restores the previous choice on exit."""
    previous = _fused_enabled
    set_fused_attention(enabled)
    try:
        yield
    finally:
        set_fused_attention(previous)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """Attention over [..., L, d] tensors. `causal` masks key j > query i (queries and keys aligned at 0)."""
    if _fused_enabled:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        n_q, n_k = q.shape[-2], k.shape[-2]
        mask = torch.full((n_q, n_k), float("-inf"), dtype=scores.dtype, device=scores.device).triu_(1)
        scores = scores + mask
    return scores.softmax(dim=-1) @ v
