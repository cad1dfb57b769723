"""Every trainer trains one epoch and evaluates on the Demo dataset with the tiny backbone, through
train.py's config path, in fp32 and bf16; the frozen CLIP stays bit-identical and only prompts change."""
import os

import pytest
import torch

from clip.random_models import random_state_dict, save_openai_format
from dassl.utils import load_checkpoint
from trainers_testutils import DEMO_TRAINERS, TINY, clip_state, demo_trainer, same_tensors


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
@pytest.mark.parametrize("name,config,prec_key", DEMO_TRAINERS, ids=[f"{n}-{c}" for n, c, _ in DEMO_TRAINERS])
def test_train_one_epoch_and_evaluate(name, config, prec_key, prec, data_root, tmp_path):
    trainer = demo_trainer(name, config, data_root, str(tmp_path), prec_key, prec)
    frozen_before = clip_state(trainer.model)
    prompts_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    if not name.startswith("Zeroshot"):
        trainer.train()  # one epoch, then the final test
        assert set(prompts_before) and all(n.startswith("prompt_learner.") for n in prompts_before)
        changed = [n for n, p in trainer.model.named_parameters() if p.requires_grad
                   and not torch.equal(p.detach(), prompts_before[n])]
        assert changed, "no prompt parameter was updated"
        model_name = trainer.get_model_names()[0]
        checkpoint = load_checkpoint(os.path.join(str(tmp_path), model_name, "model.pth.tar-1"))
        assert not any(k.startswith("clip_model.") for k in checkpoint["state_dict"])
    else:
        assert not prompts_before
    accuracy = trainer.test()
    assert 0.0 <= accuracy <= 100.0
    assert same_tensors(frozen_before, clip_state(trainer.model))


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
