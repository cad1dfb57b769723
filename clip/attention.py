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
    """Attention over [..., L, d] tensors. `causal` masks key j > query i, with the queries aligned to the
    last keys: with more keys than queries (a shared prefix's keys first), query i sits at key position
    n_k - n_q + i and sees every prefix key."""
    n_q, n_k = q.shape[-2], k.shape[-2]
    if _fused_enabled:
        if not causal or n_q == n_k:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        visible = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril_(n_k - n_q)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
    # Scale q before the product (as the fused kernels do): q @ k^T itself can overflow fp16.
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)
    if causal:
        mask = torch.full((n_q, n_k), float("-inf"), dtype=scores.dtype, device=scores.device).triu_(1 + n_k - n_q)
        scores = scores + mask
    return scores.softmax(dim=-1) @ v
