"""`clip._MODELS` / `clip._download` resolve every backbone name this package loads, the way third-party
trainer files use them (`clip._download(clip._MODELS[name])`, then torch.jit.load or torch.load): OpenAI's
(tests/test_clip_loading.py covers their download), the shipped demo backbone and the random ones, offline,
under SHA-256 rules."""
import os

import pytest
import torch

from clip import clip
from clip.bundled_models import DEMO_MODEL, bundled_path
from clip.download import CACHE_ENV, sha256_of
from clip.random_models import random_state_dict

TINY = "RandomInit-ViT-Tiny"


def _load_like_a_third_party_file(name):
    path = clip._download(clip._MODELS[name])
    try:
        state_dict = torch.jit.load(path, map_location="cpu").state_dict()
    except RuntimeError:
        state_dict = torch.load(path, map_location="cpu")
    return path, clip.build_model(state_dict)


def test_random_backbone_is_written_to_the_cache_and_rewritten_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    path, model = _load_like_a_third_party_file(TINY)
    assert path == str(tmp_path / f"{TINY}.pt") and os.listdir(tmp_path) == [f"{TINY}.pt"]
    expected = random_state_dict(TINY)
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())
    digest, mtime = sha256_of(path), os.stat(path).st_mtime_ns
    assert clip._download(clip._MODELS[TINY]) == path and os.stat(path).st_mtime_ns == mtime  # reused

    with open(path, "r+b") as handle:  # one byte damaged: not used, written again
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert clip._download(clip._MODELS[TINY], str(tmp_path)) == path
    assert sha256_of(path) == digest and os.listdir(tmp_path) == [f"{TINY}.pt"]


def test_names_with_a_slash_get_openai_file_names():
    url = clip._MODELS["RandomInit-ViT-B/16"]
    assert url.endswith("/RandomInit-ViT-B-16.pt")


def test_demo_backbone_resolves_to_the_shipped_file_verified(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    path, model = _load_like_a_third_party_file(DEMO_MODEL)
    assert path == bundled_path(DEMO_MODEL) and os.listdir(tmp_path) == []  # never copied into the cache
    assert model.visual.input_resolution == clip.load(DEMO_MODEL)[0].visual.input_resolution
    url = clip._MODELS[DEMO_MODEL]
    assert url.split("/")[-2] == sha256_of(path)  # the SHA-256 rule of OpenAI's URLs
    wrong = url.replace(url.split("/")[-2], "0" * 64)
    with pytest.raises(RuntimeError, match="expects SHA-256 0{64}, but DemoCLIP-ViT-Tiny is recorded as"):
        clip._download(wrong)


def test_unknown_pseudo_urls_are_refused():
    with pytest.raises(RuntimeError, match="names no model generated under random://; known: .*RandomInit-RN-Tiny.pt"):
        clip._download("random://RandomInit-ViT-Huge.pt")
    with pytest.raises(RuntimeError, match=r"generated under widened://; known: \['DemoCLIP-ViT-Tiny-Wide.pt'\]"):
        clip._download("widened://DemoCLIP-ViT-Tiny.pt")
    with pytest.raises(RuntimeError, match="names no model shipped"):
        clip._download("bundled://" + "0" * 64 + "/Other.pt")
