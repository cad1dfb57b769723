"""Checkpoint loading: OpenAI's two file formats, download cache and SHA-256 checks, offline errors,
random architectures."""
import hashlib
import io
import os
import subprocess
import sys
import urllib.error
from dataclasses import asdict

import pytest
import torch

import clip
from clip import download as clip_download
from clip.model import CLIP, infer_config
from clip.random_models import RANDOM_MODELS, RANDOM_PREFIX, random_state_dict, save_openai_format

TINY = "RandomInit-ViT-Tiny"


class _FakeResponse(io.BytesIO):
    def info(self):
        return {"Content-Length": str(len(self.getvalue()))}


def _serve(monkeypatch, payload: bytes):
    calls = []

    def opener(url):
        calls.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(clip_download, "open_url", opener)
    return calls


def _url_for(payload: bytes, filename: str = "Fake.pt") -> str:
    return f"https://example.invalid/clip/models/{hashlib.sha256(payload).hexdigest()}/{filename}"


def _features(model, resolution: int):
    image = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.encode_image(image), model.encode_text(clip.tokenize(["a photo of a cat.", "a dog"]))


@pytest.mark.parametrize("fmt", ["torchscript", "state_dict"])
def test_openai_file_formats_load_to_the_same_model(tmp_path, fmt):
    state_dict = random_state_dict(TINY)
    path = str(tmp_path / f"tiny_{fmt}.pt")
    save_openai_format(state_dict, path, fmt=fmt)
    loaded = clip.load_state_dict("ignored-name", path=path)
    assert set(loaded) == set(state_dict)
    assert all(torch.equal(loaded[k], state_dict[k]) for k in state_dict)
    assert loaded["visual.conv1.weight"].dtype == torch.float16

    model, preprocess = clip.load(path)
    expected = clip.build_model(state_dict).float()
    assert model.dtype == torch.float32
    for a, b in zip(_features(model, 32), _features(expected, 32)):
        assert torch.equal(a, b)
    assert preprocess.transforms[1].size == (32, 32)


def test_not_a_clip_file_is_rejected_with_its_name(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match=r"weights\.pt is not a CLIP state dict"):
        clip.load_state_dict("ViT-B/16", path=str(path))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt is neither"):
        clip.load_state_dict("ViT-B/16", path=str(garbage))
    with pytest.raises(FileNotFoundError, match="MODEL.BACKBONE.PATH"):
        clip.load_state_dict("ViT-B/16", path=str(tmp_path / "missing.pt"))


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"valid names: \['RN50'.*'RandomInit-ViT-Tiny'"):
        clip.load_state_dict("ViT-H/99")
    with pytest.raises(ValueError, match="RandomInit-RN-Tiny"):
        random_state_dict("RandomInit-nope")


def test_download_verifies_caches_and_reuses(tmp_path, monkeypatch):
    payload = b"checkpoint bytes" * 1000
    url = _url_for(payload)
    calls = _serve(monkeypatch, payload)
    path = clip.clip._download(url, str(tmp_path))
    assert path == str(tmp_path / "Fake.pt") and open(path, "rb").read() == payload
    assert clip.clip._download(url, str(tmp_path)) == path
    assert len(calls) == 1  # the verified cached file is reused

    (tmp_path / "Fake.pt").write_bytes(b"corrupted")
    with pytest.warns(UserWarning, match="SHA-256 does not match"):
        assert clip.clip._download(url, str(tmp_path)) == path
    assert len(calls) == 2 and open(path, "rb").read() == payload


def test_wrong_sha256_is_rejected_and_removed(tmp_path, monkeypatch):
    url = _url_for(b"the real file")
    _serve(monkeypatch, b"something else")
    with pytest.raises(RuntimeError, match="SHA-256"):
        clip.clip._download(url, str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    payload = b"x" * 10
    _serve(monkeypatch, payload)
    monkeypatch.setenv("CLIP_CACHE_DIR", str(tmp_path / "env_cache"))
    assert clip.clip._download(_url_for(payload)) == str(tmp_path / "env_cache" / "Fake.pt")


def test_offline_error_names_url_cache_path_and_local_option(tmp_path, monkeypatch):
    def offline(url):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(clip_download, "open_url", offline)
    with pytest.raises(RuntimeError) as error:
        clip.load_state_dict("ViT-B/16", download_root=str(tmp_path))
    message = str(error.value)
    assert clip.clip._MODELS["ViT-B/16"] in message
    assert str(tmp_path / "ViT-B-16.pt") in message
    assert "MODEL.BACKBONE.PATH" in message
    assert os.listdir(tmp_path) == []


def test_model_names():
    openai = ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"]
    # every name a third-party trainer can look up in clip._MODELS: OpenAI's, the demo's, the random ones
    assert list(clip.clip._MODELS) == openai + ["DemoCLIP-ViT-Tiny", "DemoCLIP-ViT-Tiny-Wide"] + list(RANDOM_MODELS)
    # then the supported OpenCLIP models, when open_clip_torch is installed (tests/test_openclip_backbones.py)
    names = clip.available_models()
    assert names[:len(clip.clip._MODELS)] == list(clip.clip._MODELS)
    assert all(name.startswith("openclip:") for name in names[len(clip.clip._MODELS):])
    # URLs of files that exist somewhere carry their SHA-256 as the second-to-last segment
    assert all(len(clip.clip._MODELS[name].split("/")[-2]) == 64 for name in openai + ["DemoCLIP-ViT-Tiny"])
    assert {RANDOM_PREFIX + n for n in openai} | {TINY, "RandomInit-RN-Tiny"} == set(RANDOM_MODELS)


@pytest.mark.parametrize("name", sorted(RANDOM_MODELS))
def test_random_architectures_round_trip_through_inference(name):
    """Every random architecture is what build_model infers back from its keys and shapes (on the meta
    device, so even ViT-L costs nothing)."""
    config = RANDOM_MODELS[name]
    with torch.device("meta"):
        state_dict = CLIP(**asdict(config)).state_dict()
    assert infer_config(state_dict) == config


def test_random_weights_follow_openai_init_and_are_fp16():
    state_dict = random_state_dict(TINY)
    assert all(v.dtype == torch.float16 for v in state_dict.values() if v.is_floating_point())
    width = state_dict["ln_final.weight"].shape[0]
    assert abs(state_dict["token_embedding.weight"].float().std().item() - 0.02) < 1e-3
    assert abs(state_dict["transformer.resblocks.0.attn.in_proj_weight"].float().std().item() - width ** -0.5) < 0.01
    assert state_dict["logit_scale"].item() == pytest.approx(2.6593, abs=1e-3)
    assert torch.count_nonzero(state_dict["visual.transformer.resblocks.0.attn.in_proj_bias"]) == 0
    resnet = random_state_dict("RandomInit-RN-Tiny")
    assert torch.count_nonzero(resnet["visual.layer1.0.bn3.weight"]) == 0


def test_random_weights_identical_in_another_process():
    def digest(state_dict):
        h = hashlib.sha256()
        for key in sorted(state_dict):
            h.update(key.encode())
            h.update(state_dict[key].numpy().tobytes())
        return h.hexdigest()

    torch.manual_seed(123)  # the global RNG must not matter
    here = digest(random_state_dict("RandomInit-RN-Tiny"))
    code = ("import hashlib; from clip.random_models import random_state_dict as r; s = r('RandomInit-RN-Tiny'); "
            "h = hashlib.sha256()\nfor k in sorted(s): h.update(k.encode()); h.update(s[k].numpy().tobytes())\n"
            "print(h.hexdigest())")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    there = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert there.stdout.strip() == here


def test_building_draws_nothing_from_the_global_rng():
    state_dict = random_state_dict(TINY)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    clip.build_model(state_dict)
    assert torch.equal(torch.rand(3), expected)


def test_import_surface_of_the_official_trainers():
    from clip import clip as module
    from clip.model import convert_weights
    from clip.simple_tokenizer import SimpleTokenizer

    assert callable(convert_weights) and callable(SimpleTokenizer)
    for name in ("_MODELS", "_download", "tokenize", "build_model", "available_models", "load", "load_state_dict"):
        assert hasattr(module, name), name
    for name in ("load", "tokenize", "available_models", "build_model", "load_state_dict"):
        assert getattr(clip, name) is getattr(module, name)
    with pytest.raises(ValueError, match="jit=False"):
        clip.load(TINY, jit=True)
