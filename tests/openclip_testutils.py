"""Tiny OpenCLIP architectures for the OpenCLIP-backbone tests: their configs written as open_clip JSON files,
randomly initialised by open_clip itself (`create_model(..., pretrained=None)`, seeded) and saved in each
checkpoint format OpenCLIP weights come in."""
from __future__ import annotations

import json
import os

import torch

_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "layers": 2}  # full tokenizer ids work
# name -> OpenCLIP model config. Each departs from OpenAI's defaults somewhere the weights do not show, so
# a wrong guess fails the feature tests: GELU, 32-wide heads (2 heads) and a 2x MLP in TinyOC-ViT; QuickGELU
# with one 64-wide head in the others; a ModifiedResNet whose attention pool has 32-wide heads.
TINY_CONFIGS = {
    "TinyOC-ViT": {"embed_dim": 32,
                   "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32,
                                  "mlp_ratio": 2.0},
                   "text_cfg": {**_TEXT, "heads": 2}},
    "TinyOC-ViT-quickgelu": {"embed_dim": 32, "quick_gelu": True,
                             "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
                             "text_cfg": {**_TEXT, "heads": 1}},
    "TinyOC-RN-quickgelu": {"embed_dim": 32, "quick_gelu": True,
                            "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 32},
                            "text_cfg": {**_TEXT, "heads": 1}},
}
FORMATS = ("pt", "bin", "safetensors")  # bare state dict; {"state_dict": "module."-prefixed}; safetensors


def write_config(folder: str, arch: str, preprocess: dict | None = None) -> str:
    """`arch`'s config as a JSON file in `folder` (with a "preprocess_cfg" as in open_clip_config.json when
    `preprocess` is given); returns its path."""
    path = os.path.join(folder, f"{arch}.json")
    content = TINY_CONFIGS[arch] if preprocess is None else {"model_cfg": TINY_CONFIGS[arch],
                                                             "preprocess_cfg": preprocess}
    with open(path, "w") as handle:
        json.dump(content, handle)
    return path


def open_clip_model(config_path: str, seed: int = 0):
    """open_clip's own randomly initialised model of the architecture in `config_path`, fp32, eval mode."""
    import open_clip

    open_clip.add_model_config(config_path)
    torch.manual_seed(seed)
    arch = os.path.splitext(os.path.basename(config_path))[0]
    return open_clip.create_model(arch, pretrained=None).eval()


def save_checkpoint(model, path: str, fmt: str) -> str:
    """Write `model`'s weights at `path` + ".<fmt>" in one of `FORMATS`; returns the file's path."""
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    target = f"{path}.{fmt}"
    if fmt == "pt":
        torch.save(state, target)
    elif fmt == "bin":  # a training checkpoint of a DistributedDataParallel model
        torch.save({"epoch": 3, "state_dict": {f"module.{key}": value for key, value in state.items()}}, target)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, target)
    else:
        raise ValueError(f"unknown format {fmt!r}; known: {FORMATS}")
    return target


def tiny_checkpoint(folder: str, arch: str, fmt: str = "safetensors", seed: int = 0) -> tuple[str, str, object]:
    """(config path, checkpoint path, open_clip model) of a fresh random `arch` saved in `fmt` under `folder`."""
    config = write_config(folder, arch)
    model = open_clip_model(config, seed)
    return config, save_checkpoint(model, os.path.join(folder, f"{arch}-seed{seed}"), fmt), model
