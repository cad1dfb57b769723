"""OpenAI-style entry points: model names, checkpoint loading, `load` and `tokenize`.

Official trainers do `from clip import clip` and use `clip._MODELS`, `clip._download`, `clip.tokenize` and
`clip.build_model`; those names are here with the same behaviour.
"""
from __future__ import annotations

import functools
import os

import torch

from .checkpoints import read_checkpoint
from .bundled_models import BUNDLED_MODELS, verified_bundled_path
from .model import CLIP, METADATA_KEYS, build_model, infer_config
from .model_files import MODEL_URLS, model_file
from .openclip import is_openclip_name, load_openclip_state_dict, resolve, supported_names
from .random_models import RANDOM_MODELS, random_state_dict
from .simple_tokenizer import EOT, SOT, SimpleTokenizer
from .widened_models import WIDENED_MODELS, widened_state_dict

__all__ = ["available_models", "build_model", "is_openclip_name", "load", "load_state_dict", "tokenize"]

# name -> URL of every backbone this package loads (OpenAI's, the shipped demo ones, the random ones), and
# the function that turns such a URL into a verified local file (clip/model_files.py).
_MODELS = MODEL_URLS
_download = model_file

# CLIP's image normalisation statistics.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def available_models() -> list[str]:
    """Every backbone name `load` resolves: those of `_MODELS` (OpenAI's, the ones shipped with this package
    and their widened versions, clip/widened_models.py, the random architectures, any name a plugin added),
    then, when open_clip_torch is installed, the supported OpenCLIP models ("openclip:<arch>/<tag>",
    clip/openclip.py; `_MODELS` lists none of them: importing open_clip is left to runs that use one)."""
    return list(_MODELS) + supported_names()


def load_state_dict(name: str, path: str = "", download_root: str | None = None) -> dict[str, torch.Tensor]:
    """CLIP weights as an OpenAI-format state dict.

    `path` non-empty: read that local file (this is MODEL.BACKBONE.PATH). Otherwise `name` is an OpenAI
    model (downloaded, cached, SHA-256 verified), a model shipped with this package (SHA-256 verified, never
    downloaded) or its widened version (derived from it in memory) or a random architecture ("RandomInit-...")."""
    if path:
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"CLIP checkpoint {path} (MODEL.BACKBONE.PATH) does not exist")
    if is_openclip_name(name):  # configs from open_clip's registry; weights from `path` or the Hub cache
        return load_openclip_state_dict(name, path, download_root)
    if path:
        state_dict = read_checkpoint(path)
        source = path
    elif name in RANDOM_MODELS:  # generated in memory: no file needed
        return random_state_dict(name)
    elif name in WIDENED_MODELS:  # derived in memory from a verified shipped file
        state_dict, source = widened_state_dict(name), name
    elif name in BUNDLED_MODELS:
        source = verified_bundled_path(name)
        state_dict = read_checkpoint(source)
    elif name in _MODELS:
        source = _download(_MODELS[name], download_root)
        state_dict = read_checkpoint(source)
    else:
        raise ValueError(f"Unknown CLIP model '{name}'; valid names: {list(_MODELS)}, an OpenCLIP model "
                         "'openclip:<arch>/<tag>' (clip.available_models() lists them), "
                         "or set MODEL.BACKBONE.PATH to a checkpoint file")
    infer_config(state_dict, source)  # a file that is not CLIP fails here, naming the file
    return state_dict


def _to_rgb(image):
    return image.convert("RGB")


def _preprocess(n_px: int, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD):
    # torchvision is needed only for this image pipeline, so it is imported here.
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

    return Compose([
        Resize(n_px, interpolation=InterpolationMode.BICUBIC),
        CenterCrop(n_px),
        _to_rgb,
        ToTensor(),
        Normalize(mean, std),
    ])


def load(name: str, device: str | torch.device = "cpu", jit: bool = False,
         download_root: str | None = None) -> tuple[CLIP, object]:
    """(model, preprocess) as OpenAI's clip.load: `name` is a model name or a checkpoint path; on CPU the
    model is cast to fp32. Only the eager model exists here, so jit=True is refused."""
    if jit:
        raise ValueError("jit=True is not supported: this package builds an eager CLIP model (use jit=False)")
    known = name in _MODELS or is_openclip_name(name)
    is_file = not known and os.path.isfile(os.path.expanduser(name))
    state_dict = load_state_dict(name, path=name if is_file else "", download_root=download_root)
    on_cpu = torch.device(device).type == "cpu"  # fp32 on CPU: built fp32, an fp32 file's values kept exact
    model = build_model(state_dict, source=name, half=not on_cpu).to(device)
    stats = resolve(name) if is_openclip_name(name) else None
    return model, _preprocess(model.visual.input_resolution, *((stats.mean, stats.std) if stats else (MEAN, STD)))


@functools.lru_cache(maxsize=None)
def _tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer()


def tokenize(texts: str | list[str], context_length: int = 77, truncate: bool = False) -> torch.Tensor:
    """LongTensor [N, context_length]: SOT, BPE ids, EOT, zero padding. Too long -> RuntimeError unless
    `truncate`, which cuts and keeps EOT as the last token."""
    if isinstance(texts, str):
        texts = [texts]
    tokenizer = _tokenizer()
    sot, eot = tokenizer.encoder[SOT], tokenizer.encoder[EOT]
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [sot, *tokenizer.encode(text), eot]
        if len(ids) > context_length:
            if not truncate:
                raise RuntimeError(f"Input {text} is too long for context length {context_length} "
                                   f"({len(ids)} tokens); pass truncate=True to cut it")
            ids = ids[:context_length - 1] + [eot]
        result[row, :len(ids)] = torch.tensor(ids)
    return result
