"""Trainer behaviour on the Demo dataset with the tiny backbone, through train.py's config path: precisions,
fp32 logits under autocast, frozen CLIP modes, backbones from files, the plain mode. (Every registered trainer's
train / evaluate / save / reload / resume cycle is tests/test_registered_trainers.py.)"""

import pytest
import torch

from clip.random_models import random_state_dict, save_openai_format
from trainers_testutils import TINY, clip_state, demo_trainer, same_tensors


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def test_unknown_precision_lists_the_valid_ones(data_root, tmp_path):
    with pytest.raises(ValueError, match="TRAINER.MAPLE.PREC must be one of fp16, fp32, amp, bf16; got 'fp8'"):
        demo_trainer("MaPLe", "MaPLe/tiny.yaml", data_root, str(tmp_path), "TRAINER.MAPLE.PREC", "fp8")


@pytest.mark.parametrize("prec", ["fp16", "amp"])
def test_other_precisions_train(prec, data_root, tmp_path):
    trainer = demo_trainer("MaPLe", "MaPLe/tiny.yaml", data_root, str(tmp_path), "TRAINER.MAPLE.PREC", prec)
    frozen_before = clip_state(trainer.model)
    trainer.train()
    assert all(p.dtype == torch.float32 for p in trainer.model.prompt_learner.parameters())
    assert same_tensors(frozen_before, clip_state(trainer.model))


@pytest.mark.parametrize("prec", ["bf16", "amp"])
def test_logits_are_fp32_under_autocast(prec, data_root, tmp_path):
    """At CLIP's logit scale of 100, bf16 logits would step by up to 0.5 and tie or swap the top classes."""
    trainer = demo_trainer("CoCoOp", "CoCoOp/tiny.yaml", data_root, str(tmp_path), "TRAINER.COCOOP.PREC", prec)
    trainer.set_model_mode("eval")
    with torch.no_grad():
        assert trainer.model_inference(torch.randn(2, 3, 32, 32)).dtype == torch.float32
    maple = demo_trainer("MaPLe", "MaPLe/tiny.yaml", data_root, str(tmp_path / "m"), "TRAINER.MAPLE.PREC", prec)
    maple.set_model_mode("eval")
    with torch.no_grad():
        assert maple.model_inference(torch.randn(2, 3, 32, 32)).dtype == torch.float32


def test_training_mode_leaves_the_frozen_clip_in_eval_mode(data_root, tmp_path):
    """The whole model is registered (official layout), but a ResNet's BatchNorm statistics must not move."""
    trainer = demo_trainer("IVLP", "IVLP/tiny_language_only.yaml", data_root, str(tmp_path),
                           "MODEL.BACKBONE.NAME", "RandomInit-RN-Tiny", "INPUT.SIZE", "(64, 64)")
    trainer.set_model_mode("train")
    assert trainer.model.prompt_learner.training and not trainer.model.clip_model.training
    assert not any(m.training for m in trainer.model.clip_model.modules())
    frozen_before = clip_state(trainer.model)
    trainer.train()
    assert same_tensors(frozen_before, clip_state(trainer.model))


def test_vision_prompt_methods_need_a_vit(data_root, tmp_path):
    with pytest.raises(ValueError, match="needs a ViT backbone"):
        demo_trainer("MaPLe", "MaPLe/tiny.yaml", data_root, str(tmp_path), "MODEL.BACKBONE.NAME", "RandomInit-RN-Tiny",
                     "INPUT.SIZE", "(64, 64)")


def test_backbone_from_a_local_file(data_root, tmp_path):
    # MODEL.BACKBONE.PATH wins over the name: nothing is downloaded, the file's weights are used.
    path = str(tmp_path / "my_clip.pt")
    save_openai_format(random_state_dict(TINY), path, fmt="torchscript")
    trainer = demo_trainer("CoOp", "CoOp/tiny.yaml", data_root, str(tmp_path / "out"),
                           "MODEL.BACKBONE.NAME", "ViT-B/16", "MODEL.BACKBONE.PATH", path)
    expected = random_state_dict(TINY)["visual.conv1.weight"].float()
    assert torch.equal(trainer.model.clip_model.visual.conv1.weight, expected)
    bogus = str(tmp_path / "not_clip.pt")
    torch.save({"weight": torch.zeros(2)}, bogus)
    with pytest.raises(ValueError, match="not_clip.pt"):
        demo_trainer("CoOp", "CoOp/tiny.yaml", data_root, str(tmp_path / "out2"), "MODEL.BACKBONE.PATH", bogus)


def test_plain_mode_switches_every_speedup_off(data_root, tmp_path):
    off = ["TRAINER.SPEEDUPS.TEXT_TRUNCATION", "False", "TRAINER.SPEEDUPS.EVAL_CACHE", "False",
           "TRAINER.SPEEDUPS.FUSED_ATTENTION", "False", "TRAINER.SPEEDUPS.SHARED_PREFIX", "False",
           "TRAINER.EVAL_TEXT_CHUNK", "0"]
    trainer = demo_trainer("MaPLe", "MaPLe/tiny.yaml", data_root, str(tmp_path), *off)
    options = trainer.model.options
    assert not (options.text_truncation or options.eval_cache or options.fused_attention or options.text_chunk
                or options.shared_prefix)
    trainer.train()
    assert trainer.model._cache is None
