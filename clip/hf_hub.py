"""OpenCLIP weights on the Hugging Face Hub, cached in our cache folder and verified by SHA-256.

A pretrained config's `hf_hub` ("org/repo/" or "org/repo/file.bin") names the repository and file; as in
open_clip, a safetensors file of the same stem is preferred. Files live in the Hub's own cache layout under
<cache>/huggingface, where a large (LFS) file is stored as a blob named by its SHA-256: a cached file is used,
with no network, only while its bytes hash to that name, and a fresh download is checked the same way.
"""
from __future__ import annotations

import os
import re
import warnings

from .download import sha256_of

DEFAULT_FILE = "open_clip_pytorch_model.bin"  # open_clip's name for a repository's weights
HUB_SUBDIR = "huggingface"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _hub():
    try:  # optional: needed only for OpenCLIP names (pip install huggingface_hub)
        import huggingface_hub
    except ImportError as error:
        raise RuntimeError("OpenCLIP weights on the Hugging Face Hub need the huggingface_hub package "
                           "(pip install huggingface_hub), or a local file in MODEL.BACKBONE.PATH") from error
    return huggingface_hub


def candidate_files(hf_hub: str) -> tuple[str, list[str]]:
    """(repository id, file names to try in order) for a pretrained config's `hf_hub` value."""
    repo_id, filename = os.path.split(hf_hub)
    filename = filename or DEFAULT_FILE
    stem, suffix = os.path.splitext(filename)
    safer = {DEFAULT_FILE: "open_clip_model.safetensors"}.get(filename)
    if safer is None and suffix in (".bin", ".pth"):
        safer = stem + ".safetensors"
    return repo_id, [name for name in (safer, filename) if name]


def _verified(path: str) -> bool:
    """True when the cached file's bytes hash to the name of the blob it is stored as."""
    blob = os.path.basename(os.path.realpath(path))
    if not _SHA256.fullmatch(blob):
        raise RuntimeError(f"{path} is not stored under its SHA-256 in the Hub cache (blob {blob!r}), so it "
                           "cannot be verified; remove it and download again")
    return sha256_of(path) == blob


def _discard(path: str) -> None:
    for target in {os.path.realpath(path), path}:
        if os.path.lexists(target):
            os.remove(target)


def hub_cache_dir(root: str) -> str:
    return os.path.join(root, HUB_SUBDIR)


def cached_hub_file(hf_hub: str, root: str) -> str | None:
    """The verified cached weights of `hf_hub` under `root`, found with no network; None if not cached."""
    repo_id, names = candidate_files(hf_hub)
    for name in names:
        path = _hub().try_to_load_from_cache(repo_id, name, cache_dir=hub_cache_dir(root))
        if isinstance(path, str) and os.path.isfile(path):
            if _verified(path):
                return path
            warnings.warn(f"{path} does not match its SHA-256; removing it so it is downloaded again")
            _discard(path)
    return None


def hub_file(hf_hub: str, root: str) -> str:
    """The verified local weights of `hf_hub`: from the cache under `root` if there, else downloaded once."""
    cached = cached_hub_file(hf_hub, root)
    if cached:
        return cached
    hub = _hub()
    repo_id, names = candidate_files(hf_hub)
    errors = []
    for name in names:
        try:
            path = hub.hf_hub_download(repo_id, name, cache_dir=hub_cache_dir(root))
        except Exception as error:  # not in the repository, or no network: try the next name, then report all
            errors.append(f"{name}: {type(error).__name__}: {error}".splitlines()[0])
            continue
        if not _verified(path):
            _discard(path)
            raise RuntimeError(f"Downloaded {repo_id}/{name} but its SHA-256 does not match the Hub's; the file "
                               "was discarded. Try again.")
        return path
    raise RuntimeError(f"Could not get the weights of {repo_id} ({'; '.join(errors)}). Without network access, "
                       f"download {names[-1]} from https://huggingface.co/{repo_id} elsewhere and point "
                       "MODEL.BACKBONE.PATH at it (keeping the openclip: name in MODEL.BACKBONE.NAME).")
