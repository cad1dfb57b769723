"""`clip._MODELS` and `clip._download` for every backbone name this package loads, so trainer files that
look a backbone up the official way (`clip._download(clip._MODELS[name])`, then torch.jit.load / torch.load)
run on all of them:

- OpenAI's models: their https URLs (the second-to-last segment is the file's SHA-256), downloaded into the
  cache and verified (clip/download.py);
- the models shipped in clip/weights/ (the demo's): "bundled://<sha256>/<file name>", verified against that
  SHA-256 (the one recorded in clip/bundled_models.py) and returned where they lie, never downloaded;
- the random architectures ("random://<file name>") and the widened shipped ones ("widened://<file name>",
  clip/widened_models.py): the file is written into the cache from the state dict generated now (seeded
  random weights; the verified shipped weights, widened) and is trusted only while its SHA-256 equals that
  of the bytes generated now, so a damaged or stale file is rewritten, never used.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile

import torch

from .bundled_models import BUNDLED_MODELS, verified_bundled_path
from .download import OPENAI_MODELS, default_cache_dir, download, sha256_of
from .random_models import RANDOM_MODELS, random_state_dict
from .widened_models import WIDENED_MODELS, widened_state_dict

BUNDLED_SCHEME = "bundled://"
RANDOM_SCHEME = "random://"
WIDENED_SCHEME = "widened://"


def _file_name(model_name: str) -> str:
    """OpenAI's file naming: "ViT-B/16" is stored as "ViT-B-16.pt"."""
    return model_name.replace("/", "-") + ".pt"


_BUNDLED_BY_FILE = {model.filename: name for name, model in BUNDLED_MODELS.items()}
# scheme -> (file name -> model name, the function generating that model's state dict)
_GENERATED = {
    RANDOM_SCHEME: ({_file_name(name): name for name in RANDOM_MODELS}, random_state_dict),
    WIDENED_SCHEME: ({_file_name(name): name for name in WIDENED_MODELS}, widened_state_dict),
}

MODEL_URLS: dict[str, str] = {
    **OPENAI_MODELS,
    **{name: f"{BUNDLED_SCHEME}{model.sha256}/{model.filename}" for name, model in BUNDLED_MODELS.items()},
    **{name: f"{WIDENED_SCHEME}{file}" for file, name in _GENERATED[WIDENED_SCHEME][0].items()},
    **{name: f"{RANDOM_SCHEME}{file}" for file, name in _GENERATED[RANDOM_SCHEME][0].items()},
}


def _bundled_file(url: str) -> str:
    expected, _, file = url[len(BUNDLED_SCHEME):].partition("/")
    if file not in _BUNDLED_BY_FILE:
        raise RuntimeError(f"{url} names no model shipped in clip/weights/; shipped: {sorted(_BUNDLED_BY_FILE)}")
    name = _BUNDLED_BY_FILE[file]
    if expected != BUNDLED_MODELS[name].sha256:
        raise RuntimeError(f"{url} expects SHA-256 {expected}, but {name} is recorded as "
                           f"{BUNDLED_MODELS[name].sha256} in clip/bundled_models.py")
    return verified_bundled_path(name)


def _generated_file(url: str, scheme: str, root: str) -> str:
    by_file, generate = _GENERATED[scheme]
    file = url[len(scheme):]
    if file not in by_file:
        raise RuntimeError(f"{url} names no model generated under {scheme}; known: {sorted(by_file)}")
    buffer = io.BytesIO()
    torch.save(generate(by_file[file]), buffer)
    data = buffer.getvalue()
    target = os.path.join(root, file)
    if os.path.isfile(target) and sha256_of(target) == hashlib.sha256(data).hexdigest():
        return target
    os.makedirs(root, exist_ok=True)
    # A private temporary name, then an atomic rename: parallel jobs sharing the cache never see half a file.
    handle, partial = tempfile.mkstemp(dir=root, prefix=f".{file}.", suffix=".part")
    with os.fdopen(handle, "wb") as output:
        output.write(data)
    os.chmod(partial, 0o644)
    os.replace(partial, target)
    return target


def model_file(url: str, root: str | None = None) -> str:
    """The local, verified file of a `MODEL_URLS` value (what official trainers get from `clip._download`);
    `root` is the cache folder (default: $CLIP_CACHE_DIR or ~/.cache/clip)."""
    if url.startswith(BUNDLED_SCHEME):
        return _bundled_file(url)
    root = os.path.expanduser(root) if root else default_cache_dir()
    for scheme in _GENERATED:
        if url.startswith(scheme):
            return _generated_file(url, scheme, root)
    return download(url, root)
