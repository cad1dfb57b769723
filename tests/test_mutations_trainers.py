"""Guards against plausible one-line bugs in the trainers that the rest of the suite let through: each test
checks one method's behaviour against an independent computation of the official semantics (PROTOCOL.md
§4), on the tiny random backbone, so that an off-by-one, a wrong token, a missing normalisation or a wrong
initial draw makes it fail.

- CoCoOp: the forward, loss and gradients of the official CustomCLIP (the meta-net bias shifts only the
  context vectors, per image; features normalised; logit scale) on the reference openai-clip model.
- MaPLe / IVLP with more deep layers than the other tests use (3-layer towers), so layer indices, the
  order of the couplings and separate text / vision depths matter.
- Initial values: random contexts, deep prompts, MaPLe's couplings and CoCoOp's meta-net drawn exactly as
  the official code draws them (same RNG calls, same dtype rounding).
- CTX_INIT with N_CTX 4, CoOp's middle position with an odd N_CTX, class-specific contexts with chunked
  evaluation, the zero-shot / VPT templates and ensemble.
- The PromptTrainer loop: one SGD step per batch (zeroed gradients, mean cross-entropy, momentum, weight
  decay) and the LR stepped once per epoch on the last batch (warm-up for exactly the first epoch).
"""
import math
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dassl_e2e_plugin  # noqa: F401  (registers the TinyColors dataset)
import trainers  # noqa: F401  (registers every trainer)
from clip import clip
from clip.random_models import random_state_dict
from clip_testutils import reference_clip, three_layer_state_dict
from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.utils import set_random_seed
from dassl_testutils import make_color_dataset
from official_forward_testutils import assert_rel, official_image, official_text
from trainers.cocoop import CoCoOpCLIP, PromptLearner as CoCoOpLearner
from trainers.common import PromptedCLIP, SpeedOptions, encode_class_templates, freeze_all_but_prompts
from trainers.config import extend_cfg
from trainers.coop import PromptLearner as CoOpLearner
from trainers.imagenet_templates import IMAGENET_TEMPLATES, IMAGENET_TEMPLATES_SELECT
from trainers.independentVL import VLPromptLearner
from trainers.maple import MultiModalPromptLearner
from trainers.promptsrc import PromptSRCCLIP, gpa_weights
from trainers.vpt import VisionPromptLearner
from trainers.zsclip import CUSTOM_TEMPLATES, ZeroshotCLIP2
from trainers_testutils import TINY

CLASSNAMES = ["circle", "red_square", "a long striped triangle", "star"]


def method_cfg(*opts):
    """The full config tree (method keys included) with `opts` merged; no YAML, so nothing else decides."""
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.merge_from_list(["MODEL.BACKBONE.NAME", TINY, "INPUT.SIZE", (32, 32), *opts])
    return cfg


@pytest.fixture(scope="module")
def models():
    state_dict = random_state_dict(TINY)
    return clip.build_model(dict(state_dict)).float().eval(), reference_clip().build_model(dict(state_dict)).float().eval()


@pytest.fixture(scope="module")
def deep_models():
    state_dict = three_layer_state_dict()
    ours = clip.build_model(dict(state_dict)).float().eval()
    assert ours.transformer.layers == 3 and ours.visual.transformer.layers == 3
    return ours, reference_clip().build_model(dict(state_dict)).float().eval()


@pytest.fixture(scope="module")
def half_clip():
    """OpenAI's fp16 layout (PREC fp16): CLIP's dtype decides how official initial values are rounded."""
    model = clip.build_model(random_state_dict(TINY))
    assert model.dtype == torch.float16
    return model


def perturb_(module, seed):
    """Move every parameter away from its initial value (identical deep copies, zero biases) as training does."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))


# --------------------------------------------------------------------------------------------------------
# Comparing with the official forward passes (official_forward_testutils)


def normalize(x):
    return x / x.norm(dim=-1, keepdim=True)


def tokenized_prompts(prefix, classnames=CLASSNAMES):
    return reference_clip().tokenize([f"{prefix} {name.replace('_', ' ')}." for name in classnames])


def trainable(model_class, ours, learner):
    """The trainer's model with only the prompts trainable, in train mode, and detached copies of the prompt
    parameters for the official computation."""
    model = model_class(ours, learner, SpeedOptions())
    freeze_all_but_prompts(model)
    model.train()
    return model, {name: param.detach().clone().requires_grad_() for name, param in learner.named_parameters()}


def compare_step(learner, ref_params, logits, ref_logits, label):
    """Logits, loss and the gradient of every prompt parameter agree with the official computation."""
    assert_rel(logits, ref_logits, "logits")
    loss, ref_loss = F.cross_entropy(logits, label), F.cross_entropy(ref_logits, label)
    assert_rel(loss, ref_loss, "loss")
    loss.backward()
    ref_loss.backward()
    for name, param in learner.named_parameters():
        assert_rel(param.grad, ref_params[name].grad, f"gradient of {name}")


# --------------------------------------------------------------------------------------------------------
# CoCoOp


def test_cocoop_matches_official_forward_loss_and_gradients(models):
    """Official CoCoOp: f = normalize(image features); bias = meta_net(f); ctx_shifted_i = ctx + bias_i (the
    context vectors only, not SOS or the class tokens); logits_i = logit_scale.exp() * f_i @ normalize(T_i)^T.
    Class names of different token lengths make each prompt's EOT position matter."""
    ours, ref = models
    torch.manual_seed(0)
    learner = CoCoOpLearner(method_cfg("TRAINER.COCOOP.N_CTX", 4, "TRAINER.COCOOP.CTX_INIT", "a photo of a"),
                            CLASSNAMES, ours)
    perturb_(learner.meta_net, seed=1)
    model, p = trainable(CoCoOpCLIP, ours, learner)
    image = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    label = torch.tensor([0, 3, 2])

    features = normalize(ref.encode_image(image))
    hidden = F.relu(F.linear(features, p["meta_net.linear1.weight"], p["meta_net.linear1.bias"]))
    bias = F.linear(hidden, p["meta_net.linear2.weight"], p["meta_net.linear2.bias"])
    tokenized = tokenized_prompts("a photo of a")
    rows = []
    for i in range(len(image)):
        text = normalize(official_text(ref, tokenized, p["ctx"] + bias[i], [], learner.n_ctx))
        rows.append(ref.logit_scale.exp() * features[i] @ text.t())
    compare_step(learner, p, model(image), torch.stack(rows), label)


# --------------------------------------------------------------------------------------------------------
# MaPLe and IVLP with three layers


def test_maple_three_layers_matches_official(deep_models):
    """PROMPT_DEPTH 3: text layers 1 and 2 get compound_prompts_text[0] and [1]; vision layers 1 and 2 get
    compound_prompt_projections[k](compound_prompts_text[k]) (layer k+1), the shallow vision prompt is
    proj(ctx); gradients reach the text prompts through both towers."""
    ours, ref = deep_models
    torch.manual_seed(0)
    cfg = method_cfg("TRAINER.MAPLE.N_CTX", 2, "TRAINER.MAPLE.CTX_INIT", "a photo of a", "TRAINER.MAPLE.PROMPT_DEPTH", 3)
    learner = MultiModalPromptLearner(cfg, CLASSNAMES, ours)
    perturb_(learner, seed=3)  # the deep couplings start as identical copies: make them differ
    model, p = trainable(PromptedCLIP, ours, learner)
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    label = torch.tensor([1, 2])

    deep_text = [p["compound_prompts_text.0"], p["compound_prompts_text.1"]]
    deep_vision = [F.linear(deep_text[k], p[f"compound_prompt_projections.{k}.weight"],
                            p[f"compound_prompt_projections.{k}.bias"]) for k in range(2)]
    shallow = F.linear(p["ctx"], p["proj.weight"], p["proj.bias"])
    text = normalize(official_text(ref, tokenized_prompts("a photo of a"), p["ctx"], deep_text, 2))
    img = normalize(official_image(ref, image, shallow, deep_vision))
    compare_step(learner, p, model(image), ref.logit_scale.exp() * img @ text.t(), label)


def test_ivlp_text_and_vision_depths_and_widths_are_independent(deep_models):
    """Text depth 3 with 2 tokens, vision depth 2 with 3 tokens: J-1 deep prompts per tower, each from its
    own PROMPT_DEPTH_* / N_CTX_* key."""
    ours, ref = deep_models
    torch.manual_seed(0)
    cfg = method_cfg("TRAINER.IVLP.N_CTX_TEXT", 2, "TRAINER.IVLP.N_CTX_VISION", 3, "TRAINER.IVLP.CTX_INIT", "a photo of a",
                     "TRAINER.IVLP.PROMPT_DEPTH_TEXT", 3, "TRAINER.IVLP.PROMPT_DEPTH_VISION", 2)
    learner = VLPromptLearner(cfg, CLASSNAMES, ours)
    assert len(learner.text_deep_prompts) == 2 and len(learner.vision_deep_prompts) == 1
    assert learner.vision_ctx.shape == (3, ours.visual.width)
    model, p = trainable(PromptedCLIP, ours, learner)
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    label = torch.tensor([3, 0])

    deep_text = [p["text_deep_prompts.0"], p["text_deep_prompts.1"]]
    text = normalize(official_text(ref, tokenized_prompts("a photo of a"), p["ctx"], deep_text, 2))
    img = normalize(official_image(ref, image, p["vision_ctx"], [p["vision_deep_prompts.0"]]))
    compare_step(learner, p, model(image), ref.logit_scale.exp() * img @ text.t(), label)


# --------------------------------------------------------------------------------------------------------
# Initial values


def _normal(shape, dtype=torch.float32):
    tensor = torch.empty(shape, dtype=dtype)
    nn.init.normal_(tensor, std=0.02)
    return tensor


def test_random_contexts_are_the_official_draws(half_clip):
    """CoOp/CoCoOp random init: `torch.empty(shape, dtype=clip dtype)` then normal_(std=0.02), generic
    [n_ctx, D] or class-specific [n_cls, n_ctx, D] (held in fp32 here, same values)."""
    width = half_clip.ln_final.weight.shape[0]
    for opts, shape in ((("TRAINER.COOP.N_CTX", 3), (3, width)),
                        (("TRAINER.COOP.N_CTX", 3, "TRAINER.COOP.CSC", True), (len(CLASSNAMES), 3, width))):
        torch.manual_seed(7)
        learner = CoOpLearner(method_cfg("TRAINER.COOP.CTX_INIT", "", *opts), CLASSNAMES, half_clip)
        torch.manual_seed(7)
        expected = _normal(shape, torch.float16).float()
        assert learner.ctx.dtype == torch.float32 and torch.equal(learner.ctx.detach(), expected)


def test_maple_initial_parameters_are_the_official_draws(half_clip):
    """Official creation order with a random context (N_CTX > 4 ignores CTX_INIT): ctx (CLIP dtype), proj =
    Linear(text -> vision width).half(), the J-1 deep text prompts (fp32, std 0.02), then one Linear whose
    deep copies are the J-1 couplings."""
    width, visual_width = half_clip.ln_final.weight.shape[0], half_clip.visual.width
    torch.manual_seed(5)
    cfg = method_cfg("TRAINER.MAPLE.N_CTX", 5, "TRAINER.MAPLE.CTX_INIT", "a photo of a", "TRAINER.MAPLE.PROMPT_DEPTH", 2)
    learner = MultiModalPromptLearner(cfg, CLASSNAMES, half_clip)
    torch.manual_seed(5)
    ctx = _normal((5, width), torch.float16)
    proj = nn.Linear(width, visual_width).half()
    deep = _normal((5, width))
    single = nn.Linear(width, visual_width)
    assert torch.equal(learner.ctx.detach(), ctx.float())
    assert torch.equal(learner.proj.weight.detach(), proj.weight.float())
    assert torch.equal(learner.proj.bias.detach(), proj.bias.float())
    assert torch.equal(learner.compound_prompts_text[0].detach(), deep)
    assert torch.equal(learner.compound_prompt_projections[0].weight.detach(), single.weight)
    assert torch.equal(learner.compound_prompt_projections[0].bias.detach(), single.bias)


def test_cocoop_meta_net_initial_values_are_rounded_like_the_official_half(half_clip):
    """Official: meta_net = Sequential(linear1: vis -> vis // 16, relu, linear2: -> text width), then
    `.half()` with PREC fp16; CTX_INIT draws nothing before it."""
    torch.manual_seed(9)
    learner = CoCoOpLearner(method_cfg("TRAINER.COCOOP.N_CTX", 4, "TRAINER.COCOOP.CTX_INIT", "a photo of a"),
                            CLASSNAMES, half_clip)
    torch.manual_seed(9)
    vis_dim, width = half_clip.visual.output_dim, half_clip.ln_final.weight.shape[0]
    linear1, linear2 = nn.Linear(vis_dim, vis_dim // 16).half(), nn.Linear(vis_dim // 16, width).half()
    for ours, theirs in ((learner.meta_net.linear1, linear1), (learner.meta_net.linear2, linear2)):
        assert torch.equal(ours.weight.detach(), theirs.weight.float())
        assert torch.equal(ours.bias.detach(), theirs.bias.float())


def test_ivlp_deep_prompts_are_normal_with_std_002(half_clip):
    """Every deep / vision prompt tensor is normal(std 0.02): with ~1,000 draws per tower the sample std
    is within 10% of 0.02."""
    torch.manual_seed(1)
    cfg = method_cfg("TRAINER.IVLP.N_CTX_TEXT", 4, "TRAINER.IVLP.N_CTX_VISION", 4, "TRAINER.IVLP.CTX_INIT", "a photo of a",
                     "TRAINER.IVLP.PROMPT_DEPTH_TEXT", 2, "TRAINER.IVLP.PROMPT_DEPTH_VISION", 2)
    learner = VLPromptLearner(cfg, CLASSNAMES, half_clip)
    for group in (list(learner.text_deep_prompts), [learner.vision_ctx, *learner.vision_deep_prompts]):
        values = torch.cat([p.detach().flatten() for p in group])
        assert values.numel() >= 256 and abs(values.std().item() - 0.02) < 0.002


# --------------------------------------------------------------------------------------------------------
# Context initialisation, CoOp assembly, class-specific contexts


def test_ctx_init_is_used_with_n_ctx_4(models):
    """IVLP / PromptSRC / MaPLe use CTX_INIT when N_CTX <= 4 (the language-only and PromptSRC configs have
    N_CTX 4): ctx = embeddings of the phrase's tokens 1..4, prompts tokenised from "<phrase> <class>."."""
    ours, _ = models
    cfg = method_cfg("TRAINER.IVLP.N_CTX_TEXT", 4, "TRAINER.IVLP.CTX_INIT", "a photo of a",
                     "TRAINER.IVLP.N_CTX_VISION", 0, "TRAINER.IVLP.PROMPT_DEPTH_VISION", 0,
                     "TRAINER.IVLP.PROMPT_DEPTH_TEXT", 2)
    learner = VLPromptLearner(cfg, CLASSNAMES, ours)
    with torch.no_grad():
        phrase = ours.token_embedding(clip.tokenize("a photo of a"))[0]
        tokens = clip.tokenize([f"a photo of a {name.replace('_', ' ')}." for name in CLASSNAMES])
        full = ours.token_embedding(tokens)
    assert torch.equal(learner.ctx.detach(), phrase[1:5])
    assert torch.equal(learner.tokenized_prompts, tokens)
    assert torch.equal(learner.token_prefix, full[:, :1]) and torch.equal(learner.token_suffix, full[:, 5:])


def test_coop_middle_position_with_odd_n_ctx(models):
    """CLASS_TOKEN_POSITION middle: [SOS][ctx[:n//2]][class][ctx[n//2:]][. EOT ...] with n // 2 rounded down."""
    ours, _ = models
    torch.manual_seed(0)
    cfg = method_cfg("TRAINER.COOP.N_CTX", 3, "TRAINER.COOP.CTX_INIT", "", "TRAINER.COOP.CLASS_TOKEN_POSITION", "middle")
    learner = CoOpLearner(cfg, CLASSNAMES, ours)
    with torch.no_grad():
        rows = []
        for name in CLASSNAMES:
            name = name.replace("_", " ")
            name_len = int(clip.tokenize(name).argmax(dim=-1)) - 1
            embedding = ours.token_embedding(clip.tokenize(f"X X X {name}."))
            ctx = learner.ctx.unsqueeze(0)
            rows.append(torch.cat([embedding[:, :1], ctx[:, :1], embedding[:, 4:4 + name_len], ctx[:, 1:],
                                   embedding[:, 4 + name_len:]], dim=1))
        assert torch.equal(learner.class_prompts(slice(None)), torch.cat(rows))


@torch.no_grad()
def test_class_specific_contexts_with_chunked_evaluation(models):
    """CSC: class i uses ctx[i] in every chunk of TRAINER.EVAL_TEXT_CHUNK classes (ImageNet evaluates 1000
    classes in chunks of 256)."""
    ours, _ = models
    torch.manual_seed(0)
    learner = CoOpLearner(method_cfg("TRAINER.COOP.N_CTX", 2, "TRAINER.COOP.CTX_INIT", "", "TRAINER.COOP.CSC", True),
                          CLASSNAMES, ours)
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    whole = PromptedCLIP(ours, learner, SpeedOptions(text_chunk=0)).eval()(image)
    chunked = PromptedCLIP(ours, learner, SpeedOptions(text_chunk=3)).eval()(image)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    features = []
    for i in range(len(CLASSNAMES)):
        prompt = torch.cat([learner.token_prefix[i:i + 1], learner.ctx[i:i + 1], learner.token_suffix[i:i + 1]], dim=1)
        features.append(ours.encode_text_embeddings(prompt, learner.eot_indices[i:i + 1], truncate=False))
    text = normalize(torch.cat(features))
    expected = ours.logit_scale.exp() * normalize(ours.encode_image(image)) @ text.t()
    torch.testing.assert_close(chunked, expected, rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------------------------------------
# Hand-crafted text: zero-shot CLIP and VPT


OFFICIAL_CUSTOM_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}
OFFICIAL_SELECT = ["itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
                   "a {} in a video game.", "art of the {}.", "a photo of the small {}."]


def test_zero_shot_templates_are_the_official_ones():
    assert CUSTOM_TEMPLATES == OFFICIAL_CUSTOM_TEMPLATES
    assert list(IMAGENET_TEMPLATES_SELECT) == OFFICIAL_SELECT
    assert list(IMAGENET_TEMPLATES_SELECT) == [IMAGENET_TEMPLATES[i] for i in (73, 7, 44, 69, 35, 67, 64)]

    def templates(dataset):
        fake = types.SimpleNamespace(cfg=types.SimpleNamespace(DATASET=types.SimpleNamespace(NAME=dataset)))
        return ZeroshotCLIP2.templates(fake)

    # ZeroshotCLIP2: the 7 select templates, plus the dataset's own one for every dataset but ImageNet
    assert templates("ImageNet") == OFFICIAL_SELECT
    assert templates("EuroSAT") == OFFICIAL_SELECT + ["a centered satellite photo of {}."]
    assert templates("ImageNetR") == OFFICIAL_SELECT + ["a photo of a {}."]


@torch.no_grad()
def test_template_ensemble_normalises_each_template_then_the_mean(models):
    """ZeroshotCLIP2: per template, normalised features of "<template with the class name, '_' -> ' '>";
    summed, divided by the template count, normalised again."""
    ours, _ = models
    names = ["golden_retriever", "cat", "aircraft carrier"]
    templates = ["a photo of a {}.", "itap of a {}.", "art of the {}."]
    got = encode_class_templates(ours, names, templates, SpeedOptions())
    total = 0
    for template in templates:
        total = total + normalize(ours.encode_text(clip.tokenize([template.format(n.replace("_", " ")) for n in names])))
    torch.testing.assert_close(got, normalize(total / len(templates)), rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_vpt_text_side_is_the_fixed_photo_template(models):
    ours, _ = models
    cfg = method_cfg("TRAINER.VPT.N_CTX_VISION", 2, "TRAINER.VPT.PROMPT_DEPTH_VISION", 1)
    learner = VisionPromptLearner(cfg, CLASSNAMES, ours, SpeedOptions())
    expected = normalize(ours.encode_text(clip.tokenize([f"a photo of a {n.replace('_', ' ')}." for n in CLASSNAMES])))
    torch.testing.assert_close(learner.fixed_text_features, expected, rtol=1e-5, atol=1e-6)


def test_promptsrc_fp16_teacher_logits_use_the_rounded_teacher_text():
    """Official: z0 = logit_scale * v0 @ fixed_embeddings.half().T (the fp32 teacher text rounded to fp16)."""
    clip_model = clip.build_model(random_state_dict(TINY))  # fp16
    cfg = method_cfg("TRAINER.PROMPTSRC.N_CTX_TEXT", 2, "TRAINER.PROMPTSRC.N_CTX_VISION", 2,
                     "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", 1, "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", 1,
                     "OPTIM.MAX_EPOCH", 2, "TRAINER.PROMPTSRC.GPA_MEAN", 1)
    learner = VLPromptLearner(cfg, CLASSNAMES, clip_model, method="PROMPTSRC")
    model = PromptSRCCLIP(clip_model, learner, SpeedOptions(), CLASSNAMES, gpa_weights(1, 1, 2))
    out = model(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8)), with_teacher=True)
    scale = clip_model.logit_scale.exp().float()
    rounded = scale * out.teacher_image_features @ out.teacher_text_features.half().float().t()
    unrounded = scale * out.teacher_image_features @ out.teacher_text_features.t()
    assert not torch.allclose(rounded, unrounded, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.teacher_logits, rounded, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------------
# The PromptTrainer loop: SGD per batch, LR per epoch


@pytest.fixture(scope="module")
def colors_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("colors"))
    make_color_dataset(root, per_class=8, size=10)  # 3 classes x 4 train images
    return root


def coop_trainer(root, output_dir):
    cfg = method_cfg(
        "DATASET.ROOT", root, "DATASET.NAME", "TinyColors", "TRAINER.NAME", "CoOp", "OUTPUT_DIR", output_dir,
        "INPUT.TRANSFORMS", ("random_resized_crop", "random_flip", "normalize"),
        "DATALOADER.NUM_WORKERS", 0, "DATALOADER.TRAIN_X.BATCH_SIZE", 4,
        "OPTIM.NAME", "sgd", "OPTIM.LR", 0.2, "OPTIM.MAX_EPOCH", 2, "OPTIM.LR_SCHEDULER", "cosine",
        "OPTIM.WARMUP_EPOCH", 1, "OPTIM.WARMUP_TYPE", "constant", "OPTIM.WARMUP_CONS_LR", 0.1,
        "TRAINER.COOP.N_CTX", 2, "TRAINER.COOP.CTX_INIT", "", "TRAINER.COOP.PREC", "fp32", "TRAIN.PRINT_FREQ", 100)
    set_random_seed(1)
    return build_trainer(cfg)


def test_prompt_trainer_steps_sgd_per_batch_and_the_lr_per_epoch(colors_root, tmp_path):
    """Each batch: zero_grad, mean cross-entropy, backward, SGD (momentum 0.9, weight decay 5e-4) at the
    current LR; the scheduler steps once, after the last batch of each epoch: every batch of epoch 0 runs at
    the warm-up LR, every batch of epoch 1 at the full LR, and the cosine has moved on after it."""
    trainer = coop_trainer(colors_root, str(tmp_path))
    ctx = trainer.model.prompt_learner.ctx
    steps = []
    original = trainer.forward_backward

    def recording(batch):
        before, lr = ctx.detach().clone(), trainer.optim.param_groups[0]["lr"]
        summary = original(batch)
        steps.append((batch, before, ctx.detach().clone(), lr))
        return summary

    trainer.forward_backward = recording
    trainer.max_epoch = 2
    for trainer.epoch in range(2):
        trainer.run_epoch()
    batches = len(trainer.train_loader_x)
    assert batches == 3
    assert [lr for *_, lr in steps] == pytest.approx([0.1] * batches + [0.2] * batches, rel=1e-12)
    assert trainer.optim.param_groups[0]["lr"] == pytest.approx(0.2 * (1 + math.cos(math.pi / 2)) / 2, rel=1e-12)

    # the same updates, computed independently: autograd on the mean CE, then SGD by its formula
    model = trainer.model
    buffer = None
    for batch, before, after, lr in steps:
        with torch.no_grad():
            ctx.copy_(before)
        loss = F.cross_entropy(model(batch["img"]), batch["label"])
        (grad,) = torch.autograd.grad(loss, [ctx])
        d_p = grad + 5e-4 * before
        buffer = d_p if buffer is None else 0.9 * buffer + d_p
        torch.testing.assert_close(after, before - lr * buffer, rtol=1e-5, atol=1e-7)
