"""Backbones shipped inside this package: resolved by name like OpenAI's, verified by SHA-256, never downloaded.

`DemoCLIP-ViT-Tiny` is a tiny CLIP pre-trained by this project on a synthetic world of captioned pictures
(docs/DEMO.md); `python -m scripts.pretrain_demo_backbone` regenerates it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .download import sha256_of

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


@dataclass(frozen=True)
class BundledModel:
    filename: str
    sha256: str
    regenerate: str  # the command that writes the file


DEMO_MODEL = "DemoCLIP-ViT-Tiny"
BUNDLED_MODELS: dict[str, BundledModel] = {
    DEMO_MODEL: BundledModel(
        "DemoCLIP-ViT-Tiny.pt", "48e31b2bb39d36331461e6ba6ac24a1f9d419904bb5024be1f9a684beda8832e",
        "python -m scripts.pretrain_demo_backbone"),
}


def bundled_path(name: str) -> str:
    return os.path.join(WEIGHTS_DIR, BUNDLED_MODELS[name].filename)


def verified_bundled_path(name: str) -> str:
    """The shipped file of `name`, after checking that it is there and has its recorded SHA-256."""
    model, path = BUNDLED_MODELS[name], bundled_path(name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The bundled backbone {name} is missing: expected {path}. Restore it with "
                                f"`git checkout -- {os.path.relpath(path)}` or regenerate it with `{model.regenerate}`")
    actual = sha256_of(path)
    if actual != model.sha256:
        raise RuntimeError(f"The bundled backbone {path} has SHA-256 {actual}, but {name} is recorded as "
                           f"{model.sha256} in clip/bundled_models.py. Restore the shipped file (git checkout), "
                           f"or after regenerating it on purpose (`{model.regenerate}`), record the new hash.")
    return path
