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
