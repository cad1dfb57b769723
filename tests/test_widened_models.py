"""The widened demo backbone (clip/widened_models.py): ViT-B/16's widths, the demo backbone's features, and the
`clip._MODELS` / `clip._download` route third-party trainer files take to it."""
import os

import pytest
import torch

from clip import clip
from clip.bundled_models import DEMO_MODEL
from clip.download import CACHE_ENV, sha256_of
from clip.random_models import random_state_dict
from clip.widened_models import WIDENED_MODELS, widen_vit_state_dict

WIDE = DEMO_MODEL + "-Wide"


@pytest.fixture(scope="module")
def demo_and_wide():
    narrow = clip.build_model(clip.load_state_dict(DEMO_MODEL)).float().eval()
    wide = clip.build_model(clip.load_state_dict(WIDE)).float().eval()
    return narrow, wide


def test_widened_backbone_has_vit_b16_widths(demo_and_wide):
    narrow, wide = demo_and_wide
    # what official files hard-code: text prompts of width 512, vision prompts of width 768, features of 512
    assert wide.ln_final.weight.shape[0] == 512 and wide.visual.conv1.weight.shape[0] == 768
    assert wide.text_projection.shape[1] == wide.visual.proj.shape[1] == 512
    assert wide.transformer.resblocks[0].attn.heads == 8 and wide.visual.transformer.resblocks[0].attn.heads == 12
    # everything else is the demo backbone's
    assert wide.visual.input_resolution == narrow.visual.input_resolution
    assert len(wide.transformer.resblocks) == len(narrow.transformer.resblocks)


def test_widened_backbone_computes_the_demo_backbones_features(demo_and_wide):
    """Features: 4 copies of the demo backbone's; logits (cosine similarities): the demo backbone's."""
    narrow, wide = demo_and_wide
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 32, 32, generator=generator)
    texts = clip.tokenize(["a photo of a dog.", "a drawing of a red ball.", "a painting of a cat"])
    with torch.no_grad():
        for encode, inputs in ((lambda m, x: m.encode_image(x), images), (lambda m, x: m.encode_text(x), texts)):
            expected, actual = encode(narrow, inputs).repeat(1, 4), encode(wide, inputs)
            assert (actual - expected).abs().max() <= 1e-5 * expected.abs().max()
        expected, actual = narrow(images, texts)[0], wide(images, texts)[0]
        assert (actual - expected).abs().max() <= 1e-4


def test_a_prompt_that_is_not_copies_uses_the_extra_width(demo_and_wide):
    """Every dimension of a learned prompt reaches the features: a change confined to the second copy's
    dimensions (which the weights do not read) moves them through LayerNorm's statistics."""
    _, wide = demo_and_wide
    tokens = clip.tokenize(["a photo of a dog."])
    with torch.no_grad():
        embeddings = wide.token_embedding(tokens)
        changed = embeddings.clone()
        changed[0, 1, 128:256] += 1.0  # the second copy of position 1
        eot = tokens.argmax(dim=-1)
        before = wide.encode_text_embeddings(embeddings, eot)
        after = wide.encode_text_embeddings(changed, eot)
    assert (after - before).abs().max() > 1e-3


def test_widened_backbone_resolves_through_clip_download(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    path = clip._download(clip._MODELS[WIDE])
    assert path == str(tmp_path / f"{WIDE}.pt")
    state_dict = torch.load(path, map_location="cpu")
    expected = clip.load_state_dict(WIDE)
    assert state_dict.keys() == expected.keys()
    assert all(torch.equal(state_dict[key], expected[key]) for key in expected)
    digest, mtime = sha256_of(path), os.stat(path).st_mtime_ns
    assert clip._download(clip._MODELS[WIDE]) == path and os.stat(path).st_mtime_ns == mtime  # reused
    assert WIDE in clip.available_models() and WIDE in WIDENED_MODELS
    assert digest == sha256_of(path)


def test_widening_refuses_widths_that_are_not_whole_multiples():
    state_dict = random_state_dict("RandomInit-ViT-Tiny")  # 64 wide
    with pytest.raises(ValueError, match="Cannot widen the text width from 64 to 96"):
        widen_vit_state_dict(state_dict, text_width=96, vision_width=128, embed_dim=32)
    with pytest.raises(ValueError, match="Cannot widen the embedding width from 32 to 48"):
        widen_vit_state_dict(state_dict, text_width=128, vision_width=128, embed_dim=48)
    widened = widen_vit_state_dict(state_dict, text_width=128, vision_width=192, embed_dim=64)
    model = clip.build_model(widened)
    assert model.ln_final.weight.shape[0] == 128 and model.visual.conv1.weight.shape[0] == 192
    assert model.text_projection.shape == (128, 64)


def test_official_maple_calls_with_vit_b16_constants_fit_the_widened_backbone():
    """What the official MaPLe file does with its constants (text prompts of width 512, `nn.Linear(ctx_dim, 768)`
    to the vision side), driven through the `design_details` model the official way."""
    design = {"trainer": "MaPLe", "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0,
              "maple_length": 2}
    model = clip.build_model(clip.load_state_dict(WIDE), design).float().eval()
    torch.manual_seed(0)
    ctx = torch.randn(2, 512) * 0.02
    deep_text = [torch.randn(2, 512) * 0.02 for _ in range(2)]
    to_vision = torch.nn.Linear(512, 768)
    tokens = clip.tokenize(["X X dog.", "X X red ball."])
    with torch.no_grad():
        embedded = model.token_embedding(tokens)
        x = torch.cat([embedded[:, :1], ctx.expand(2, -1, -1), embedded[:, 3:]], dim=1) + model.positional_embedding
        x, _, counter = model.transformer([x.permute(1, 0, 2), deep_text, 0])
        x = model.ln_final(x.permute(1, 0, 2))
        text = x[torch.arange(2), tokens.argmax(dim=-1)] @ model.text_projection
        image = model.visual(torch.randn(3, 3, 32, 32), to_vision(ctx), [to_vision(p) for p in deep_text])
    assert counter == 2 and text.shape == (2, 512) and image.shape == (3, 512)
    assert torch.isfinite(text).all() and torch.isfinite(image).all()
