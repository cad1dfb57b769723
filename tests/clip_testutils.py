"""Helpers for the clip tests: the openai-clip reference package (imported under another name, since our
`clip` package shadows it), small random state dicts in OpenAI's format, and the official prompted forward
passes computed block by block on the reference model."""
from __future__ import annotations

import functools
import importlib.util
import os
import sys
import sysconfig

import torch

from clip.random_models import random_state_dict

TINY = "RandomInit-ViT-Tiny"

REFERENCE_NAME = "openai_clip_reference"


@functools.lru_cache(maxsize=None)
def reference_clip():
    """The installed openai-clip package's `clip.clip` module (its model, tokenizer and build_model)."""
    package_dir = os.path.join(sysconfig.get_paths()["purelib"], "clip")
    init = os.path.join(package_dir, "__init__.py")
    if not os.path.isfile(init):
        raise RuntimeError(f"the openai-clip reference package is not installed (looked for {init}); "
                           "pip install openai-clip")
    spec = importlib.util.spec_from_file_location(REFERENCE_NAME, init, submodule_search_locations=[package_dir])
    package = importlib.util.module_from_spec(spec)
    sys.modules[REFERENCE_NAME] = package
    spec.loader.exec_module(package)
    return importlib.import_module(f"{REFERENCE_NAME}.clip")


def perturbed_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict whose constant-initialised tensors (biases, LayerNorm/BatchNorm affine and
    statistics, zeroed bn3 weights) get noise, so parity tests exercise every parameter."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in random_state_dict(name).items():
        if value.is_floating_point() and value.numel() > 1 and bool((value == value.flatten()[0]).all()):
            noise = 0.1 * torch.randn(value.shape, generator=generator).to(value.dtype)
            value = value + (noise.abs() if key.endswith("running_var") else noise)
        out[key] = value
    return out


def three_layer_state_dict():
    """The tiny backbone with a third (distinct) block in both towers, so deep prompts can skip a layer."""
    state_dict = random_state_dict(TINY)
    generator = torch.Generator().manual_seed(11)
    for tower in ("transformer.resblocks.", "visual.transformer.resblocks."):
        for key in [k for k in state_dict if k.startswith(tower + "1.")]:
            value = state_dict[key].float()
            noise = 0.05 * value.abs().mean() * torch.randn(value.shape, generator=generator)
            state_dict[key.replace(tower + "1.", tower + "2.")] = (value + noise).to(state_dict[key].dtype)
    return state_dict


# Official forward passes on the reference openai-clip model (sequence-first, block by block)


def official_text(ref, tokenized, ctx, deep, n_ctx):
    """Prompts [SOS][ctx][rest of the tokenised "<prefix> <class>."] + positional embedding; deep prompt k
    replaces tokens 1..n_ctx at the input of block k+1; ln_final at the EOT token; text projection. `ctx` is
    [n_ctx, D] (shared) or [n_cls, n_ctx, D]."""
    n_cls = tokenized.shape[0]
    embedding = ref.token_embedding(tokenized)
    if ctx.dim() == 2:
        ctx = ctx.unsqueeze(0).expand(n_cls, -1, -1)
    x = torch.cat([embedding[:, :1], ctx, embedding[:, 1 + n_ctx:]], dim=1) + ref.positional_embedding
    x = x.permute(1, 0, 2)
    for i, block in enumerate(ref.transformer.resblocks):
        if 1 <= i <= len(deep):
            x = torch.cat([x[:1], deep[i - 1].unsqueeze(1).expand(-1, n_cls, -1), x[1 + n_ctx:]], dim=0)
        x = block(x)
    x = ref.ln_final(x.permute(1, 0, 2))
    return x[torch.arange(n_cls), tokenized.argmax(dim=-1)] @ ref.text_projection


def official_image(ref, image, shallow, deep):
    """Prompts appended after CLS + patches (after +pos, before ln_pre); deep prompt k replaces the last n
    tokens at the input of block k+1; CLS token pooled."""
    visual = ref.visual
    x = visual.conv1(image)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1]), x], dim=1)
    x = x + visual.positional_embedding
    if shallow is not None:
        x = torch.cat([x, shallow.unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
    x = visual.ln_pre(x).permute(1, 0, 2)
    for i, block in enumerate(visual.transformer.resblocks):
        if 1 <= i <= len(deep):
            n = deep[i - 1].shape[0]
            x = torch.cat([x[:-n], deep[i - 1].unsqueeze(1).expand(-1, x.shape[1], -1)], dim=0)
        x = block(x)
    return visual.ln_post(x.permute(1, 0, 2)[:, 0]) @ visual.proj
