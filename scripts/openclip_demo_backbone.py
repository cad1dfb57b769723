"""The demo backbone as an OpenCLIP-architecture model: an open_clip config (.json) and a .safetensors file.

    python -m scripts.openclip_demo_backbone OUT_DIR
    TRAINER=CoOp CFG=demo bash scripts/base2new_train.sh demo 1 \\
        MODEL.BACKBONE.NAME openclip:OUT_DIR/DemoCLIP-ViT-Tiny-openclip.json \\
        MODEL.BACKBONE.PATH OUT_DIR/DemoCLIP-ViT-Tiny-openclip.safetensors

DemoCLIP-ViT-Tiny (clip/weights/) has OpenAI's layout, which is OpenCLIP's CLIP class with QuickGELU: its
weights are written in fp32 under the same keys, with the OpenCLIP architecture config they need. The file is
then loaded by open_clip itself and its features compared with the shipped backbone's (the largest difference is
printed), and the run above goes through the OpenCLIP route of MODEL.BACKBONE (clip/openclip.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from clip import clip
from clip.bundled_models import DEMO_MODEL
from clip.model import infer_config

STEM = "DemoCLIP-ViT-Tiny-openclip"


def openclip_config(state_dict: dict) -> dict:
    """The OpenCLIP architecture config of an OpenAI-layout ViT state dict (64-wide heads, QuickGELU)."""
    config = infer_config(state_dict)
    return {"embed_dim": config.embed_dim, "quick_gelu": True,
            "vision_cfg": {"image_size": config.image_resolution, "layers": config.vision_layers,
                           "width": config.vision_width, "patch_size": config.vision_patch_size, "head_width": 64},
            "text_cfg": {"context_length": config.context_length, "vocab_size": config.vocab_size,
                         "width": config.transformer_width, "heads": config.transformer_heads,
                         "layers": config.transformer_layers}}


def write_files(out_dir: str) -> tuple[str, str]:
    from safetensors.torch import save_file

    state_dict = clip.load_state_dict(DEMO_MODEL)
    os.makedirs(out_dir, exist_ok=True)
    config_path = os.path.join(out_dir, f"{STEM}.json")
    with open(config_path, "w") as handle:
        json.dump(openclip_config(state_dict), handle, indent=2)
    weights_path = os.path.join(out_dir, f"{STEM}.safetensors")
    save_file({key: value.float().contiguous() for key, value in state_dict.items()}, weights_path)
    return config_path, weights_path


def largest_feature_difference(config_path: str, weights_path: str) -> float:
    """open_clip's features of the written model against the shipped backbone's (fp32, one batch)."""
    import open_clip

    open_clip.add_model_config(config_path)
    theirs = open_clip.create_model(STEM, pretrained=weights_path).eval()
    ours = clip.build_model(clip.load_state_dict(DEMO_MODEL), half=False)
    size = ours.visual.input_resolution
    images = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    tokens = clip.tokenize(["a sketch of a cat.", "a photo of a red kettle."])
    with torch.no_grad():
        return max((theirs.encode_image(images) - ours.encode_image(images)).abs().max().item(),
                   (theirs.encode_text(tokens) - ours.encode_text(tokens)).abs().max().item())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="folder for the .json config and the .safetensors weights")
    args = parser.parse_args(argv)
    config_path, weights_path = write_files(args.out_dir)
    print(f"wrote {config_path} and {weights_path}")
    print(f"largest feature difference, open_clip vs the shipped backbone: "
          f"{largest_feature_difference(config_path, weights_path):.3g}")
    print(f"MODEL.BACKBONE.NAME openclip:{config_path} MODEL.BACKBONE.PATH {weights_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
