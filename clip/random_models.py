"""Randomly initialised CLIP architectures: for tests and the offline demo. Never pretrained weights.

"RandomInit-<OpenAI name>" has the exact shapes of that OpenAI model; "RandomInit-ViT-Tiny" and
"RandomInit-RN-Tiny" are small enough for CPU tests. Weights follow OpenAI's initialisation (PyTorch
defaults, then CLIP's initialize_parameters std values), are drawn from a generator seeded by the name
(never the global RNG), so a name gives bit-identical weights in every process, and are stored in fp16
like OpenAI's files.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import asdict, replace

import torch
from torch import nn

from .model import CLIP, CLIPConfig, SelfAttention, VisionTransformer
from .resnet import ModifiedResNet

RANDOM_PREFIX = "RandomInit-"

_TEXT = dict(context_length=77, vocab_size=49408, transformer_layers=12)


def _vit(embed: int, resolution: int, layers: int, width: int, patch: int, text_width: int) -> CLIPConfig:
    return CLIPConfig(embed, resolution, layers, width, patch, transformer_width=text_width,
                      transformer_heads=text_width // 64, **_TEXT)


def _resnet(embed: int, resolution: int, layers: tuple[int, int, int, int], width: int, text_width: int) -> CLIPConfig:
    return CLIPConfig(embed, resolution, layers, width, None, transformer_width=text_width,
                      transformer_heads=text_width // 64, **_TEXT)


# Shapes of OpenAI's released models (facts of their checkpoints).
_OPENAI_SHAPES = {
    "RN50": _resnet(1024, 224, (3, 4, 6, 3), 64, 512),
    "RN101": _resnet(512, 224, (3, 4, 23, 3), 64, 512),
    "RN50x4": _resnet(640, 288, (4, 6, 10, 6), 80, 640),
    "RN50x16": _resnet(768, 384, (6, 8, 18, 8), 96, 768),
    "RN50x64": _resnet(1024, 448, (3, 15, 36, 10), 128, 1024),
    "ViT-B/32": _vit(512, 224, 12, 768, 32, 512),
    "ViT-B/16": _vit(512, 224, 12, 768, 16, 512),
    "ViT-L/14": _vit(768, 224, 24, 1024, 14, 768),
    "ViT-L/14@336px": _vit(768, 336, 24, 1024, 14, 768),
}
# Tiny text tower: full vocabulary and context (real tokenizer ids work), one 64-wide head, two layers.
_TINY_VIT = replace(_vit(32, 32, 2, 64, 8, 64), transformer_layers=2)
_TINY_RN = replace(_resnet(32, 64, (1, 1, 1, 1), 8, 64), transformer_layers=2)

RANDOM_MODELS: dict[str, CLIPConfig] = {
    **{RANDOM_PREFIX + name: config for name, config in _OPENAI_SHAPES.items()},
    RANDOM_PREFIX + "ViT-Tiny": _TINY_VIT,
    RANDOM_PREFIX + "RN-Tiny": _TINY_RN,
}


def random_model_names() -> list[str]:
    return list(RANDOM_MODELS)


def _seed_for(name: str) -> int:
    # A stable function of the name (Python's hash() is salted per process).
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def _normal(tensor: torch.Tensor, std: float, generator: torch.Generator) -> None:
    nn.init.normal_(tensor, std=std, generator=generator)


def _uniform_fan_in(tensor: torch.Tensor, fan_in: int, generator: torch.Generator) -> None:
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(tensor, -bound, bound, generator=generator)


def initialize(model: CLIP, generator: torch.Generator) -> None:
    """Fill every parameter and buffer of `model` the way OpenAI's freshly constructed CLIP is filled."""
    with torch.no_grad():
        # 1. PyTorch module defaults (what OpenAI's modules get before initialize_parameters).
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                if module.bias is not None:
                    _uniform_fan_in(module.bias, module.weight[0].numel(), generator)
            elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
                module.reset_parameters()
            elif isinstance(module, nn.Embedding):
                _normal(module.weight, 1.0, generator)
        for module in model.modules():
            if isinstance(module, SelfAttention):  # nn.MultiheadAttention's own reset
                nn.init.xavier_uniform_(module.in_proj_weight, generator=generator)
                module.in_proj_bias.zero_()
                module.out_proj.bias.zero_()
        visual = model.visual
        if isinstance(visual, VisionTransformer):
            scale = visual.width ** -0.5
            for tensor in (visual.class_embedding, visual.positional_embedding, visual.proj):
                _normal(tensor, scale, generator)
        # 2. OpenAI's initialize_parameters.
        _normal(model.token_embedding.weight, 0.02, generator)
        _normal(model.positional_embedding, 0.01, generator)
        if isinstance(visual, ModifiedResNet):
            pool = visual.attnpool
            _normal(pool.positional_embedding, pool.positional_embedding.shape[1] ** -0.5, generator)
            std = pool.c_proj.in_features ** -0.5
            for layer in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                _normal(layer.weight, std, generator)
            for stage in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
                for block in stage:
                    block.bn3.weight.zero_()  # each residual branch starts as the identity
        text = model.transformer
        proj_std = text.width ** -0.5 * (2 * text.layers) ** -0.5
        attn_std = text.width ** -0.5
        fc_std = (2 * text.width) ** -0.5
        for block in text.resblocks:
            _normal(block.attn.in_proj_weight, attn_std, generator)
            _normal(block.attn.out_proj.weight, proj_std, generator)
            _normal(block.mlp.c_fc.weight, fc_std, generator)
            _normal(block.mlp.c_proj.weight, proj_std, generator)
        _normal(model.text_projection, text.width ** -0.5, generator)
        model.logit_scale.fill_(math.log(1 / 0.07))


def random_state_dict(name: str) -> dict[str, torch.Tensor]:
    """OpenAI-format state dict (fp16 floating tensors) of the random architecture `name`."""
    if name not in RANDOM_MODELS:
        raise ValueError(f"Unknown random architecture '{name}'; valid names: {random_model_names()}")
    with torch.device("meta"):
        model = CLIP(**asdict(RANDOM_MODELS[name]))
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(_seed_for(name))
    initialize(model, generator)
    return {key: value.half() if value.is_floating_point() else value for key, value in model.state_dict().items()}


def save_openai_format(state_dict: dict[str, torch.Tensor], path: str, fmt: str = "state_dict") -> None:
    """Write `state_dict` the way OpenAI ships checkpoints: "state_dict" (torch.save of the dict) or
    "torchscript" (a TorchScript archive of a module whose state_dict() has exactly these keys)."""
    if fmt == "state_dict":
        torch.save(state_dict, path)
    elif fmt == "torchscript":
        with warnings.catch_warnings():  # TorchScript is deprecated in torch, but it is OpenAI's format
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.script(_TensorTree(state_dict)), path)
    else:
        raise ValueError(f"Unknown checkpoint format '{fmt}'; valid formats: ['state_dict', 'torchscript']")


class _TensorTree(nn.Module):
    """Holds tensors under dotted names as nested submodules, so state_dict() reproduces the names."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        children: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            head, _, rest = key.partition(".")
            if rest:
                children.setdefault(head, {})[rest] = value
            else:
                self.register_buffer(head, value.detach().clone())
        for head, subtree in children.items():
            self.add_module(head, _TensorTree(subtree))

    def forward(self) -> int:
        return 0
