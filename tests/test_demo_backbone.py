"""The shipped demo backbone: its registry entry, hash check, OpenAI layout, size, and the pre-training
script that regenerates it (a smoke-sized run of the same code)."""
import os
import shutil
import zlib

import pytest
import torch

import clip
from clip import bundled_models
from clip.bundled_models import BUNDLED_MODELS, DEMO_MODEL
from clip.model import infer_config
from scripts import pretrain_demo_backbone as pretrain


def test_the_demo_backbone_loads_by_name_through_the_clip_path():
    path = bundled_models.verified_bundled_path(DEMO_MODEL)
    assert path == os.path.join(os.path.dirname(clip.__file__), "weights", "DemoCLIP-ViT-Tiny.pt")
    state_dict = clip.load_state_dict(DEMO_MODEL)
    assert infer_config(state_dict) == pretrain.CONFIG
    # OpenAI's file layout: every floating tensor fp16, OpenAI's key names (strict load succeeds).
    assert all(v.dtype == torch.float16 for v in state_dict.values() if v.is_floating_point())
    model, preprocess = clip.load(DEMO_MODEL)
    assert model.visual.input_resolution == 32 and model.dtype == torch.float32  # cast to fp32 on CPU
    assert DEMO_MODEL in clip.available_models()


def test_the_shipped_file_is_small_as_git_stores_it():
    with open(bundled_models.bundled_path(DEMO_MODEL), "rb") as handle:
        data = handle.read()
    # git stores objects zlib-compressed; the token rows the world never uses are zero and vanish.
    assert len(zlib.compress(data)) <= 8 * 2 ** 20


def test_only_the_world_vocabulary_has_token_embeddings():
    embedding = clip.load_state_dict(DEMO_MODEL)["token_embedding.weight"].float()
    used = torch.zeros(embedding.shape[0], dtype=torch.bool)
    used[pretrain.world_token_ids()] = True
    assert embedding[~used].abs().sum() == 0
    assert (embedding[used].abs().sum(1) > 0).all()


def test_a_changed_file_is_refused_with_the_way_out(tmp_path, monkeypatch):
    copy = tmp_path / BUNDLED_MODELS[DEMO_MODEL].filename
    shutil.copyfile(bundled_models.bundled_path(DEMO_MODEL), copy)
    with open(copy, "r+b") as handle:
        handle.seek(-100, os.SEEK_END)
        handle.write(b"\x01")
    monkeypatch.setattr(bundled_models, "WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="python -m scripts.pretrain_demo_backbone"):
        clip.load_state_dict(DEMO_MODEL)
    copy.unlink()
    with pytest.raises(FileNotFoundError, match="git checkout"):
        clip.load_state_dict(DEMO_MODEL)


def test_pretraining_smoke_run_is_seeded_and_writes_a_loadable_backbone(tmp_path, capsys):
    args = ["--steps", "2", "--batch-size", "16", "--pool-size", "48", "--eval-images", "20", "--threads", "1"]
    first, second = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    assert pretrain.main([*args, "--out", first]) == 0
    assert pretrain.main([*args, "--out", second]) == 0
    output = capsys.readouterr().out
    assert "zero-shot accuracy, world:" in output and "zero-shot accuracy, demo style:" in output
    state_dict = clip.load_state_dict("", path=first)
    again = clip.load_state_dict("", path=second)
    assert all(torch.equal(state_dict[key], again[key]) for key in state_dict)
    assert infer_config(state_dict, first) == pretrain.CONFIG
    shipped = clip.load_state_dict(DEMO_MODEL)
    assert set(state_dict) == set(shipped)
    assert not torch.equal(state_dict["visual.proj"], shipped["visual.proj"])  # two steps are not the real run


def test_contrastive_loss_is_clips_symmetric_cross_entropy():
    model = clip.load(DEMO_MODEL)[0]
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = clip.tokenize(["a star", "a red circle", "a photo of a small heart"])
    features_i = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
    features_t = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
    logits = model.logit_scale.exp() * features_i @ features_t.t()
    expected = (torch.nn.functional.cross_entropy(logits, torch.arange(3))
                + torch.nn.functional.cross_entropy(logits.t(), torch.arange(3))) / 2
    assert torch.allclose(pretrain.contrastive_loss(model, images, tokens), expected)
