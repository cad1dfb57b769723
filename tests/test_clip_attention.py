"""clip/attention.py: the explicit path scales before the product (fp16-safe) and both paths align causal
queries to the last keys when a shared prefix's keys come first."""
import pytest
import torch

from clip.attention import attention, fused_attention


def test_plain_attention_scales_queries_before_the_product_in_fp16():
    # q.k = 64 * 40 * 40 = 102400 overflows fp16 (max 65504); scaled by 1/sqrt(64) first it is 12800 + 40 j,
    # exact in fp16, and key j = i (the last one query i may see) wins by e^40: the output is v[i].
    n, d = 5, 64
    q = torch.full((1, 1, n, d), 40.0)
    k = torch.full((1, 1, n, d), 40.0)
    for j in range(n):
        k[..., j, : 8 * j] = 41.0
    v = torch.randn(1, 1, n, d, generator=torch.Generator().manual_seed(0))
    q, k, v = q.half(), k.half(), v.half()
    assert torch.isinf(q @ k.transpose(-2, -1)).all()  # the unscaled product would overflow
    with fused_attention(False):
        plain = attention(q, k, v, causal=True)
    with fused_attention(True):
        fused = attention(q, k, v, causal=True)
    assert torch.isfinite(plain).all()
    torch.testing.assert_close(plain, fused, rtol=0, atol=1e-3)
    torch.testing.assert_close(plain, v, rtol=0, atol=1e-3)


@pytest.mark.parametrize("fused", [True, False])
def test_queries_after_a_prefix_see_every_prefix_key_and_earlier_own_keys(fused):
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(3, 2, 9, 16, generator=generator) for _ in range(3))
    with fused_attention(fused):
        whole = attention(q, k, v, causal=True)
        tail = attention(q[:, :, 4:], k, v, causal=True)  # the last 5 queries over all 9 keys
    torch.testing.assert_close(tail, whole[:, :, 4:], rtol=1e-5, atol=1e-6)
