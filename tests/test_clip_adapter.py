"""CLIP-Adapter (trainers/clip_adapter.py): step by step against the official-style file
(tests/official_style_clip_adapter.py: the same logits, losses and adapter weights in fp32 before and after SGD
steps), what it trains and saves (the adapter only, under the official names), the residual arithmetic, every
precision, and bad settings."""
import os

import pytest
import torch
import torch.nn.functional as F

import dassl_e2e_plugin  # noqa: F401  (registers the TinyColors dataset)
import official_style_clip_adapter  # noqa: F401  (registers OfficialStyleCLIPAdapter)
from clip import model as clip_model
from clip.download import CACHE_ENV
from dassl.engine import build_trainer
from dassl.utils import load_checkpoint, set_random_seed
from dassl_testutils import make_color_dataset
from trainers.method import trained_parameter_count
from trainers_testutils import assert_steps_agree, clip_state, demo_trainer, method_cfg, same_tensors

CONFIG = "CLIP_Adapter/tiny.yaml"


@pytest.fixture(scope="module")
def colors_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("colors"))
    make_color_dataset(root, per_class=8, size=10)
    return root


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def _trainer(name, root, output_dir, *opts):
    cfg = method_cfg(CONFIG, "TRAINER.NAME", name, "DATASET.NAME", "TinyColors", "DATASET.ROOT", root,
                     "DATASET.NUM_SHOTS", "2", "OUTPUT_DIR", output_dir, *opts)
    set_random_seed(1)
    return build_trainer(cfg)


def test_official_style_file_step_by_step_fp32(colors_root, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    # the official style encodes all 77 positions: without our exact truncation both run the same operations
    monkeypatch.setattr(clip_model._truncation, "enabled", False)
    monkeypatch.setattr(clip_model._prefix_sharing, "enabled", False)
    # no warm-up and a larger LR than the config's so that four steps move the logits well beyond the tolerance
    opts = ("OPTIM.LR", "0.5", "OPTIM.WARMUP_EPOCH", "0",
            "TRAINER.SPEEDUPS.TEXT_TRUNCATION", "False", "TRAINER.SPEEDUPS.SHARED_PREFIX", "False")
    mine = _trainer("CLIP_Adapter", colors_root, str(tmp_path / "ours"), *opts)
    official = _trainer("OfficialStyleCLIPAdapter", colors_root, str(tmp_path / "theirs"), *opts)
    assert {n for n, p in official.model.named_parameters() if p.requires_grad} == \
        {"adapter.fc.0.weight", "adapter.fc.2.weight"}
    # the same initial adapter: both drew it from the same seeded generator after building the same CLIP
    for a, b in zip(mine.model.clip_adapter.parameters(), official.model.adapter.parameters()):
        assert torch.equal(a, b)

    # both register the adapter as `clip_adapter` (the official name); four steps, checked on 16 test images
    assert_steps_agree(mine, official, lambda trainer: dict(trainer._models["clip_adapter"].named_parameters()),
                       steps=4, images=16)


def test_the_residual_mix_and_the_logits():
    """f = 0.2 * ReLU(W2 ReLU(W1 x)) + 0.8 * x, then cosine logits with the fixed text features."""
    from trainers.clip_adapter import Adapter, AdaptedCLIP
    from trainers_testutils import fp32_clip, options

    clip = fp32_clip()
    torch.manual_seed(0)
    width = clip.text_projection.shape[1]
    text = F.normalize(torch.randn(3, width), dim=-1)
    model = AdaptedCLIP(clip, text, Adapter(width, 4), 0.2, options())
    image = torch.randn(2, 3, 32, 32)
    x = clip.encode_image(image).float()
    w1, w2 = model.clip_adapter.fc[0].weight, model.clip_adapter.fc[2].weight
    mixed = 0.2 * torch.relu(torch.relu(x @ w1.t()) @ w2.t()) + 0.8 * x
    expected = clip.logit_scale.exp() * F.normalize(mixed, dim=-1) @ text.t()
    with torch.no_grad():
        torch.testing.assert_close(model(image), expected)
    assert w1.shape == (width // 4, width) and w2.shape == (width, width // 4)


# fp16, where an fp32 adapter over a half-precision CLIP can go wrong; every declared precision takes a step in
# tests/test_registered_trainers.py
def test_under_fp16_trains_only_the_fp32_adapter_and_saves_it(data_root, tmp_path):
    trainer = demo_trainer("CLIP_Adapter", CONFIG, data_root, str(tmp_path), "TRAINER.CLIP_ADAPTER.PREC", "fp16")
    frozen = clip_state(trainer.model)
    before = {n: p.detach().clone() for n, p in trainer.model.clip_adapter.named_parameters()}
    trainer.train()
    assert same_tensors(frozen, clip_state(trainer.model))
    assert all(p.dtype == torch.float32 for p in trainer.model.clip_adapter.parameters())
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.clip_adapter.named_parameters())
    checkpoint = load_checkpoint(os.path.join(str(tmp_path), "clip_adapter", "model.pth.tar-1"))
    assert sorted(checkpoint["state_dict"]) == ["fc.0.weight", "fc.2.weight"]  # the official file's keys
    width = trainer.model.clip_model.text_projection.shape[1]
    assert trained_parameter_count(trainer) == 2 * width * (width // 4)
    trainer.set_model_mode("eval")
    with torch.no_grad():
        logits = trainer.model_inference(next(iter(trainer.test_loader))["img"][:4])
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


@pytest.mark.parametrize("key, value, message", [
    ("TRAINER.CLIP_ADAPTER.RATIO", "1.5", "RATIO must be between 0 and 1"),
    ("TRAINER.CLIP_ADAPTER.REDUCTION", "0", "REDUCTION must be >= 1"),
    ("TRAINER.CLIP_ADAPTER.REDUCTION", "100000", "leaves no hidden unit"),
    ("TRAINER.CLIP_ADAPTER.PREC", "fp8", "TRAINER.CLIP_ADAPTER.PREC must be one of"),
])
def test_bad_settings_name_the_key(key, value, message, data_root, tmp_path):
    with pytest.raises(ValueError, match=message):
        demo_trainer("CLIP_Adapter", CONFIG, data_root, str(tmp_path), key, value)
