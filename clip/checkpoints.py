"""One reader for every CLIP checkpoint file this package loads: OpenAI's TorchScript archives, torch-saved
files (.pt, .pth, .bin) and safetensors files; the state dict bare or wrapped in {"state_dict": ...} (training
checkpoints), its keys with or without DistributedDataParallel's "module." prefix."""
from __future__ import annotations

import warnings

import torch

from .model import METADATA_KEYS

SAFETENSORS_SUFFIX = ".safetensors"
_DDP_PREFIX = "module."


def _read_safetensors(path: str) -> dict:
    try:  # an optional dependency, needed only for this format
        from safetensors.torch import load_file
    except ImportError as error:
        raise ValueError(f"{path} is a safetensors file; reading it needs the safetensors package "
                         "(pip install safetensors)") from error
    return load_file(path, device="cpu")


def _read_torch(path: str) -> object:
    try:
        with warnings.catch_warnings():  # torch deprecates TorchScript, but OpenAI's files are TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(path, map_location="cpu").eval().state_dict()
    except RuntimeError:
        pass  # not a TorchScript archive: try a plain torch-saved object
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is neither a TorchScript archive nor a torch-saved state dict: {error}") from error


def _unwrap(content: object) -> object:
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    if isinstance(content, dict) and content and all(str(key).startswith(_DDP_PREFIX) for key in content):
        content = {key[len(_DDP_PREFIX):]: value for key, value in content.items()}
    return content


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The state dict held by the file at `path` (name -> tensor, plus the non-tensor entries of
    `METADATA_KEYS`); a ValueError naming the file when it holds something else."""
    content = _unwrap(_read_safetensors(path) if path.endswith(SAFETENSORS_SUFFIX) else _read_torch(path))
    if not isinstance(content, dict) or not all(
            isinstance(value, torch.Tensor) or key in METADATA_KEYS for key, value in content.items()):
        raise ValueError(f"{path} does not hold a CLIP state dict (a dict of parameter name -> tensor, bare or "
                         f"under 'state_dict'); found {type(content).__name__}")
    return dict(content)
