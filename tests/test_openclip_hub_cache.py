"""The Hub-cache resolver (clip/hf_hub.py) on a local fake cache in the Hub's layout, with no network: a tagged
OpenCLIP name loads from the cache offline, a damaged file is never used, and a download is verified."""
import hashlib
import os
import shutil

import pytest
import torch

from clip import clip, hf_hub
from openclip_testutils import tiny_checkpoint

open_clip = pytest.importorskip("open_clip")
from open_clip import pretrained as open_clip_pretrained  # noqa: E402  (after the importorskip)

REPO_ID = "test-org/tiny-openclip"
TAG = "offline_s1"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _put_in_cache(root: str, source: str, filename: str) -> str:
    """Store `source` as the Hub does: a blob named by its SHA-256, linked from the commit's snapshot."""
    repo = os.path.join(root, hf_hub.HUB_SUBDIR, "models--" + REPO_ID.replace("/", "--"))
    with open(source, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    os.makedirs(os.path.join(repo, "snapshots", COMMIT), exist_ok=True)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    shutil.copyfile(source, os.path.join(repo, "blobs", digest))
    link = os.path.join(repo, "snapshots", COMMIT, filename)
    os.symlink(os.path.join("..", "..", "blobs", digest), link)
    with open(os.path.join(repo, "refs", "main"), "w") as handle:
        handle.write(COMMIT)
    return link


@pytest.fixture()
def tagged_tiny(tmp_path, monkeypatch):
    """TinyOC-ViT registered in open_clip with a pretrained tag on the fake Hub repository; no network."""
    config, checkpoint, reference = tiny_checkpoint(str(tmp_path), "TinyOC-ViT", "safetensors")
    monkeypatch.setitem(open_clip_pretrained._PRETRAINED, "TinyOC-ViT",
                        {TAG: open_clip_pretrained._pcfg(hf_hub=f"{REPO_ID}/")})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    downloads = []

    def no_network(*args, **kwargs):
        downloads.append(args)
        raise OSError("no network in tests")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_network)
    return {"checkpoint": checkpoint, "reference": reference, "downloads": downloads, "root": str(tmp_path / "cache")}


def test_a_tagged_name_loads_from_the_cache_offline(tagged_tiny):
    _put_in_cache(tagged_tiny["root"], tagged_tiny["checkpoint"], "open_clip_model.safetensors")
    state = clip.load_state_dict(f"openclip:TinyOC-ViT/{TAG}", download_root=tagged_tiny["root"])
    assert not tagged_tiny["downloads"]
    model = clip.build_model(state, half=False)
    tokens = open_clip.get_tokenizer("TinyOC-ViT")(["a photo of a dog."])
    with torch.no_grad():
        gap = (model.encode_text(tokens) - tagged_tiny["reference"].encode_text(tokens)).abs().max().item()
    assert gap <= 1e-5
    assert f"openclip:TinyOC-ViT/{TAG}" in clip.available_models()


def test_the_bin_file_is_used_when_the_repository_has_no_safetensors(tagged_tiny, tmp_path):
    model = tagged_tiny["reference"]
    bin_file = str(tmp_path / "weights.bin")
    torch.save(model.state_dict(), bin_file)
    _put_in_cache(tagged_tiny["root"], bin_file, hf_hub.DEFAULT_FILE)
    assert clip.load_state_dict(f"openclip:TinyOC-ViT/{TAG}", download_root=tagged_tiny["root"])
    assert not tagged_tiny["downloads"]


def test_a_damaged_cached_file_is_discarded_never_used(tagged_tiny):
    link = _put_in_cache(tagged_tiny["root"], tagged_tiny["checkpoint"], "open_clip_model.safetensors")
    with open(os.path.realpath(link), "r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00damaged")
    with pytest.warns(UserWarning, match="does not match its SHA-256"), \
            pytest.raises(RuntimeError, match="MODEL.BACKBONE.PATH"):
        clip.load_state_dict(f"openclip:TinyOC-ViT/{TAG}", download_root=tagged_tiny["root"])
    assert not os.path.lexists(link) and tagged_tiny["downloads"]  # removed, then a download was tried


def test_a_download_is_verified_against_the_hubs_sha256(tagged_tiny, monkeypatch):
    root = tagged_tiny["root"]
    good = tagged_tiny["checkpoint"]

    def fake_download(repo_id, filename, cache_dir):  # what the Hub client leaves: a blob under its SHA-256
        assert (repo_id, cache_dir) == (REPO_ID, os.path.join(root, hf_hub.HUB_SUBDIR))
        return _put_in_cache(root, good, filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    assert hf_hub.hub_file(f"{REPO_ID}/", root).endswith("open_clip_model.safetensors")
    shutil.rmtree(os.path.join(root, hf_hub.HUB_SUBDIR))

    def corrupt_download(repo_id, filename, cache_dir):
        link = _put_in_cache(root, good, filename)
        with open(os.path.realpath(link), "ab") as handle:
            handle.write(b"tampered")
        return link

    monkeypatch.setattr("huggingface_hub.hf_hub_download", corrupt_download)
    with pytest.raises(RuntimeError, match="SHA-256 does not match"):
        hf_hub.hub_file(f"{REPO_ID}/", root)
    assert hf_hub.cached_hub_file(f"{REPO_ID}/", root) is None  # nothing unverified left behind


def test_candidate_files_prefer_safetensors_as_open_clip_does():
    assert hf_hub.candidate_files("laion/CLIP-ViT-B-16-laion2B-s34B-b88K/") == (
        "laion/CLIP-ViT-B-16-laion2B-s34B-b88K", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
    assert hf_hub.candidate_files("org/repo/weights.pth") == ("org/repo", ["weights.safetensors", "weights.pth"])
