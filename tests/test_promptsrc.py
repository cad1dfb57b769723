"""PromptSRC (PROTOCOL.md §4.8): the teacher, the four loss terms against hand computation, the Gaussian
prompt aggregation weights and state, trainable-parameter counts (Appendix B), precisions, and official
checkpoint keys."""
import math
import os

import pytest
import torch

from clip import clip
from dassl.utils import save_checkpoint
from trainers.common import PromptedCLIP, SpeedOptions, encode_class_templates, freeze_all_but_prompts
from trainers.imagenet_templates import IMAGENET_TEMPLATES
from trainers.independentVL import VLPromptLearner
from trainers.promptsrc import PROMPTSRC_TEMPLATES, GaussianPromptAggregation, gpa_weights, promptsrc_loss
from promptsrc_testutils import CLASSNAMES, DEMO_CONFIG, tiny_promptsrc, uninitialised_clip
from trainers_testutils import clip_state, demo_trainer, method_cfg, same_tensors


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


# --------------------------------------------------------------------------------------------------------
# Teacher and losses


def test_templates_are_the_official_60():
    assert len(PROMPTSRC_TEMPLATES) == 60
    expected = [39, *range(0, 39), *range(40, 60)]
    assert list(PROMPTSRC_TEMPLATES) == [IMAGENET_TEMPLATES[i] for i in expected]
    assert PROMPTSRC_TEMPLATES[0] == "a photo of a {}."


def test_teacher_and_loss_terms_match_hand_computation():
    torch.manual_seed(0)
    model = tiny_promptsrc()
    freeze_all_but_prompts(model)
    clip_model = model.clip_model
    model.train()
    images = torch.randn(3, 3, 32, 32)
    label = torch.tensor([0, 2, 1])
    out = model(images, with_teacher=True)

    with torch.no_grad():
        # teacher text: mean of the raw (un-normalised) features of the 60 templates, then normalised
        names = [name.replace("_", " ") for name in CLASSNAMES]
        raw = torch.stack([clip_model.encode_text(clip.tokenize([t.format(n) for n in names]))
                           for t in PROMPTSRC_TEMPLATES]).mean(dim=0)
        t0 = raw / raw.norm(dim=-1, keepdim=True)
        v0 = clip_model.encode_image(images)
        v0 = v0 / v0.norm(dim=-1, keepdim=True)
    scale = clip_model.logit_scale.exp()
    torch.testing.assert_close(out.teacher_text_features, t0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.teacher_image_features, v0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.teacher_logits, scale * v0 @ t0.t(), atol=1e-4, rtol=1e-5)
    assert not (out.teacher_logits.requires_grad or out.teacher_image_features.requires_grad)
    # the student is the prompted model: its features differ from the teacher's and carry gradients
    torch.testing.assert_close(out.logits, scale * out.image_features @ out.text_features.t())
    assert not torch.allclose(out.image_features, v0, atol=1e-3)
    assert out.logits.requires_grad

    loss = promptsrc_loss(out, label, text_weight=25, image_weight=10)
    z, z0 = out.logits.detach(), out.teacher_logits
    log_p, log_p0 = z.log_softmax(dim=1), z0.log_softmax(dim=1)
    ce = -log_p[torch.arange(3), label].mean()
    kl = (log_p0.exp() * (log_p0 - log_p)).sum() / (3 * len(CLASSNAMES))
    text = 25 * (out.text_features.detach() - t0).abs().mean()
    image = 10 * (out.image_features.detach() - v0).abs().mean()
    for got, expected in [(loss.ce, ce), (loss.kl, kl), (loss.text, text), (loss.image, image),
                          (loss.total, ce + kl + text + image)]:
        torch.testing.assert_close(got.detach(), expected, atol=1e-5, rtol=1e-5)
    assert kl > 0 and text > 0 and image > 0

    loss.total.backward()
    assert all(p.grad is not None for p in model.prompt_learner.parameters())
    assert all(p.grad is None for p in clip_model.parameters())


def test_teacher_text_is_computed_lazily_and_never_saved():
    model = tiny_promptsrc()
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, len(CLASSNAMES)) and model.teacher_text is None
    model.train()
    model(torch.randn(2, 3, 32, 32), with_teacher=True)
    assert model.teacher_text is not None
    assert not any("teacher" in key for key in model.state_dict())


def test_fp16_teacher_text_is_computed_in_fp32():
    # The official teacher CLIP is fp32 even when the model is fp16. The tiny backbone's weights are
    # fp16-representable, so an fp16 model's teacher must equal the fp32 model's, not an fp16 computation.
    classnames = ["cat"]
    fp32_features = tiny_promptsrc(classnames)(torch.randn(1, 3, 32, 32), with_teacher=True).teacher_text_features
    half = tiny_promptsrc(classnames)
    half.clip_model.half()
    half_features = half(torch.randn(1, 3, 32, 32), with_teacher=True).teacher_text_features
    assert half.clip_model.dtype == torch.float16 and half_features.dtype == torch.float32
    torch.testing.assert_close(half_features, fp32_features, atol=1e-6, rtol=1e-6)
    in_fp16 = encode_class_templates(half.clip_model, classnames, PROMPTSRC_TEMPLATES, SpeedOptions(),
                                     normalize_each=False)
    assert not torch.allclose(in_fp16, fp32_features, atol=1e-5)


# --------------------------------------------------------------------------------------------------------
# Gaussian prompt aggregation


def test_gpa_weights_match_the_protocol():
    b2n = gpa_weights(15, 1, 20)
    assert b2n.dtype == torch.float64 and math.isclose(float(b2n.sum()), 1.0, abs_tol=1e-12)
    expected = [0.0044, 0.054, 0.242, 0.399, 0.242, 0.054, 0.0044]  # epochs 12..18
    assert [round(float(w), 4) for w in b2n[11:18]] == pytest.approx(expected, abs=5e-4)
    assert float(b2n[:11].sum() + b2n[18:].sum()) < 1e-3
    xd = gpa_weights(6, 10, 20)
    assert float(xd[0]) == pytest.approx(0.055, abs=1e-3) and int(xd.argmax()) == 5
    assert float(xd[5]) == pytest.approx(0.063, abs=1e-3) and float(xd[19]) == pytest.approx(0.024, abs=1e-3)
    few = gpa_weights(30, 30, 50)
    assert 0.013 < float(few.min()) and float(few.max()) < 0.024
    alt = gpa_weights(45, 5, 50)
    assert int(alt.argmax()) == 44 and float(alt[44]) == pytest.approx(0.092, abs=1e-3)
    # the normal density itself, epoch by epoch
    density = [math.exp(-0.5 * (e - 15) ** 2) / math.sqrt(2 * math.pi) for e in range(1, 21)]
    assert b2n.tolist() == pytest.approx([d / sum(density) for d in density], rel=1e-12)


@pytest.mark.parametrize("mean,std,message", [(15, 0, "GPA_STD must be > 0"), (1000, 1, "zero weight")])
def test_gpa_weights_reject_unusable_settings(mean, std, message):
    with pytest.raises(ValueError, match=message):
        gpa_weights(mean, std, 20)


def test_aggregation_is_the_weighted_sum_and_refuses_missing_epochs():
    learner = torch.nn.Module()
    learner.ctx = torch.nn.Parameter(torch.zeros(2, 3))
    learner.deep = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(4))])
    gpa = GaussianPromptAggregation(learner, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))
    for epoch, value in enumerate([1.0, 2.0, 4.0]):
        with torch.no_grad():
            for p in learner.parameters():
                p.fill_(value)
        gpa.accumulate(learner, epoch)
    gpa.load_into(learner)
    assert torch.allclose(learner.ctx, torch.full((2, 3), 0.2 + 0.6 + 2.0))
    assert torch.allclose(learner.deep[0], torch.full((4,), 2.8))
    state = gpa.state_dict()
    assert set(state) == {"epochs_done", "sum_ctx", "sum_deep_0"} and int(state["epochs_done"]) == 3

    fresh = GaussianPromptAggregation(learner, torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))
    with pytest.raises(RuntimeError, match="without the aggregation state"):
        fresh.accumulate(learner, 1)


# --------------------------------------------------------------------------------------------------------
# Parameters, checkpoints, training


@pytest.mark.parametrize("config,expected", [
    ("PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml", 46_080),
    ("PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml", 15_360),
    ("PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml", 46_080),
])
def test_trainable_parameter_count_on_vit_b16(config, expected):
    clip_model = uninitialised_clip("RandomInit-ViT-B/16")
    learner = VLPromptLearner(method_cfg(config), CLASSNAMES, clip_model, method="PROMPTSRC")
    trainable = freeze_all_but_prompts(PromptedCLIP(clip_model, learner, SpeedOptions()))
    assert sum(dict(learner.named_parameters())[n[len("prompt_learner."):]].numel() for n in trainable) == expected


def test_official_checkpoint_keys_load_and_the_zs_encoder_is_ignored(data_root, tmp_path):
    trainer = demo_trainer("PromptSRC", DEMO_CONFIG, data_root, str(tmp_path / "run"))
    learner = trainer.model.prompt_learner
    torch.manual_seed(3)
    official = {
        "prompt_learner.ctx": torch.randn_like(learner.ctx).half(),
        "prompt_learner.token_prefix": torch.zeros(1),  # rebuilt from the class names, never loaded
        "prompt_learner.token_suffix": torch.zeros(1),
        "image_encoder.VPT": torch.randn_like(learner.vision_ctx),
        "image_encoder.transformer.resblocks.1.VPT_shallow": torch.randn_like(learner.vision_deep_prompts[0]),
        "text_encoder.transformer.resblocks.1.VPT_shallow": torch.randn_like(learner.text_deep_prompts[0]),
        "prompt_learner.ZS_image_encoder.conv1.weight": torch.randn(3, 3),
        "image_encoder.conv1.weight": torch.randn(3, 3),
    }
    folder = tmp_path / "official" / "VLPromptLearner"
    folder.mkdir(parents=True)
    torch.save({"state_dict": official, "epoch": 20}, str(folder / "model.pth.tar-20"))
    frozen = clip_state(trainer.model)
    trainer.load_model(str(tmp_path / "official"), epoch=20)
    assert torch.equal(learner.ctx, official["prompt_learner.ctx"].float())
    assert torch.equal(learner.vision_ctx, official["image_encoder.VPT"])
    assert torch.equal(learner.vision_deep_prompts[0], official["image_encoder.transformer.resblocks.1.VPT_shallow"])
    assert torch.equal(learner.text_deep_prompts[0], official["text_encoder.transformer.resblocks.1.VPT_shallow"])
    assert same_tensors(frozen, clip_state(trainer.model))


@pytest.mark.parametrize("prec", ["fp16", "bf16", "amp"])
def test_other_precisions_train_prompts_only(prec, data_root, tmp_path):
    trainer = demo_trainer("PromptSRC", DEMO_CONFIG, data_root, str(tmp_path), "TRAINER.PROMPTSRC.PREC", prec)
    frozen = clip_state(trainer.model)
    before = {n: p.detach().clone() for n, p in trainer.model.prompt_learner.named_parameters()}
    trainer.train()
    learner = trainer.model.prompt_learner
    assert all(p.dtype == torch.float32 for p in learner.parameters())
    assert any(not torch.equal(p, before[n]) for n, p in learner.named_parameters())
    assert same_tensors(frozen, clip_state(trainer.model))


def _checkpoint(run_dir, epoch):
    return torch.load(os.path.join(run_dir, "VLPromptLearner", f"model.pth.tar-{epoch}"), weights_only=False)


def test_training_aggregates_the_epochs_and_a_resumed_run_continues_exactly(data_root, tmp_path):
    opts = ("OPTIM.MAX_EPOCH", "3", "TRAIN.CHECKPOINT_FREQ", "1")
    full_dir = str(tmp_path / "full")
    demo_trainer("PromptSRC", DEMO_CONFIG, data_root, full_dir, *opts).train()
    weights = gpa_weights(2, 1, 3)
    states = [_checkpoint(full_dir, e)["state_dict"] for e in (1, 2, 3)]
    names = ["ctx", "vision_ctx", "text_deep_prompts.0", "vision_deep_prompts.0"]
    for name in names:
        key, sum_key = f"prompt_learner.{name}", "gpa.sum_" + name.replace(".", "_")
        # epochs 1 and 2 saved their raw prompts and the running sum; epoch 3 the aggregate
        expected = float(weights[0]) * states[0][key] + float(weights[1]) * states[1][key]
        torch.testing.assert_close(states[1][sum_key], expected)
        torch.testing.assert_close(states[2][key], states[2][sum_key])
        assert not torch.equal(states[2][key], states[1][key])
    assert [int(s["gpa.epochs_done"]) for s in states] == [1, 2, 3]

    # interrupted after epoch 2: resuming finishes with the same aggregated prompts
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "VLPromptLearner").mkdir(parents=True)
    for epoch in (1, 2):
        name = f"model.pth.tar-{epoch}"
        (resumed_dir / "VLPromptLearner" / name).write_bytes(
            (tmp_path / "full" / "VLPromptLearner" / name).read_bytes())
    (resumed_dir / "VLPromptLearner" / "checkpoint").write_text("model.pth.tar-2\n")
    demo_trainer("PromptSRC", DEMO_CONFIG, data_root, str(resumed_dir), *opts).train()
    final = _checkpoint(str(resumed_dir), 3)["state_dict"]
    for name in names:
        torch.testing.assert_close(final[f"prompt_learner.{name}"], states[2][f"prompt_learner.{name}"])

    # a checkpoint without the aggregation state cannot be resumed silently
    checkpoint = _checkpoint(full_dir, 2)
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("gpa.")}
    save_checkpoint(checkpoint, str(tmp_path / "stripped" / "VLPromptLearner"))
    with pytest.raises(RuntimeError, match="without the aggregation state"):
        demo_trainer("PromptSRC", DEMO_CONFIG, data_root, str(tmp_path / "stripped"), *opts).train()
