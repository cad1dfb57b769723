"""clip/linear.py: fp16 linear layers on the CPU computed from fp32 copies (fp32 accumulation, one rounding)."""
import torch
import torch.nn.functional as F
from torch import nn

from clip.linear import Linear, linear


def _operands(dtype):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(37, 64, generator=generator).to(dtype).requires_grad_()
    weight = (torch.randn(96, 64, generator=generator) / 8).to(dtype)
    bias = torch.randn(96, generator=generator).to(dtype)
    return x, weight, bias


def test_fp16_on_cpu_is_the_fp32_product_rounded_once():
    x, weight, bias = _operands(torch.float16)
    out = linear(x, weight, bias)
    assert out.dtype == torch.float16
    expected = F.linear(x.detach().float(), weight.float(), bias.float()).half()
    assert torch.equal(out, expected)
    # and PyTorch's own fp16 product agrees to fp16 rounding
    native = F.linear(x.detach(), weight, bias).float()
    assert (out.float() - native).abs().max() <= 2e-3 * native.abs().max()
    out.float().square().sum().backward()
    assert x.grad.dtype == torch.float16
    reference = x.detach().float().requires_grad_()
    F.linear(reference, weight.float(), bias.float()).half().float().square().sum().backward()
    assert (x.grad.float() - reference.grad).abs().max() <= 2e-3 * reference.grad.abs().max()


def test_fp16_autocast_on_cpu_rounds_the_operands_like_autocast_then_accumulates_in_fp32():
    x, weight, bias = _operands(torch.float32)
    with torch.autocast("cpu", dtype=torch.float16):
        out = linear(x, weight, bias)
        native = F.linear(x.detach(), weight, bias)
    assert out.dtype == native.dtype == torch.float16
    expected = F.linear(x.detach().half().float(), weight.half().float(), bias.half().float()).half()
    assert torch.equal(out, expected)
    assert (out.float() - native.float()).abs().max() <= 2e-3 * native.float().abs().max()
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 autocast: PyTorch's own path
        assert torch.equal(linear(x, weight, bias), F.linear(x, weight, bias))


def test_other_dtypes_call_f_linear_unchanged():
    for dtype in (torch.float32, torch.bfloat16):
        x, weight, bias = _operands(dtype)
        assert torch.equal(linear(x, weight, bias), F.linear(x, weight, bias))
        assert torch.equal(linear(x, weight), F.linear(x, weight))


def test_linear_module_keeps_nn_linear_names_and_numbers():
    torch.manual_seed(0)
    ours, theirs = Linear(8, 4), nn.Linear(8, 4)
    assert isinstance(ours, nn.Linear)  # convert_weights and initialisers treat it as one
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 8)
    assert list(ours.state_dict()) == ["weight", "bias"] and torch.equal(ours(x), theirs(x))
