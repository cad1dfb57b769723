"""Download OpenAI's CLIP checkpoints into a cache folder, verified against the SHA-256 in their URL."""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import warnings

from tqdm import tqdm

# Public URLs of OpenAI's checkpoints; the second-to-last path segment is the file's SHA-256.
OPENAI_MODELS = {
    "RN50": "https://openaipublic.azureedge.net/clip/models/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": "https://openaipublic.azureedge.net/clip/models/8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": "https://openaipublic.azureedge.net/clip/models/7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "RN50x16": "https://openaipublic.azureedge.net/clip/models/52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt",
    "RN50x64": "https://openaipublic.azureedge.net/clip/models/be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt",
    "ViT-B/32": "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": "https://openaipublic.azureedge.net/clip/models/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": "https://openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": "https://openaipublic.azureedge.net/clip/models/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}

CACHE_ENV = "CLIP_CACHE_DIR"
_CHUNK = 1 << 20


def default_cache_dir() -> str:
    """$CLIP_CACHE_DIR if set, else ~/.cache/clip."""
    return os.path.expanduser(os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "clip"))


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_url(url: str):
    """The URL opener (a module-level function so tests can replace it; there is no network in tests)."""
    return urllib.request.urlopen(url, timeout=60)


def download(url: str, root: str | None = None) -> str:
    """Return the path of the verified file for `url` in `root` (default `default_cache_dir()`), downloading
    it with a progress bar if it is missing or fails verification. Nothing unverified is ever left behind."""
    root = os.path.expanduser(root) if root else default_cache_dir()
    os.makedirs(root, exist_ok=True)
    expected = url.split("/")[-2]
    target = os.path.join(root, os.path.basename(url))
    if os.path.exists(target) and not os.path.isfile(target):
        raise RuntimeError(f"{target} exists and is not a regular file; remove it so the checkpoint can be cached")
    if os.path.isfile(target):
        if sha256_of(target) == expected:
            return target
        warnings.warn(f"{target} exists but its SHA-256 does not match {expected}; removing it and downloading again")
        os.remove(target)
    # A private temporary name: parallel jobs (scripts/sweep.sh) sharing a cache never write the same file.
    handle, partial = tempfile.mkstemp(dir=root, prefix=f".{os.path.basename(url)}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as output, open_url(url) as source:
            length = source.info().get("Content-Length")
            with tqdm(total=int(length) if length else None, unit="iB", unit_scale=True, unit_divisor=1024,
                      ncols=80, desc=os.path.basename(url)) as bar:
                for chunk in iter(lambda: source.read(_CHUNK), b""):
                    output.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as error:
        if os.path.exists(partial):
            os.remove(partial)
        raise RuntimeError(
            f"Could not download {url} ({error}). Without network access, download that file elsewhere and "
            f"place it at {target}, or point the config key MODEL.BACKBONE.PATH (the `path` argument of "
            f"clip.load_state_dict) at a local copy of the checkpoint."
        ) from error
    actual = sha256_of(partial)
    if actual != expected:
        os.remove(partial)
        raise RuntimeError(f"Downloaded {url} but its SHA-256 is {actual}, expected {expected}; the file was "
                           f"discarded. Try again, or place a verified copy at {target}.")
    os.chmod(partial, 0o644)  # mkstemp makes it private; a shared cache must stay readable
    os.replace(partial, target)
    return target
