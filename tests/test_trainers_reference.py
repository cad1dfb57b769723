"""Faithfulness: an independent re-implementation of the official forward passes (sequence-first, on the
reference openai-clip package's model built from the same weights, running its residual blocks one by one
and replacing prompt tokens per the official rules) gives the same logits, loss, gradients and parameters
after one SGD step as our trainers' models, in fp32."""
import pytest
import torch
import torch.nn.functional as F

from clip import clip
from clip.random_models import random_state_dict
from clip_testutils import official_image, official_text, reference_clip
from trainers.common import PromptedCLIP, SpeedOptions, freeze_all_but_prompts
from trainers.coop import PromptLearner as CoOpLearner
from trainers.independentVL import VLPromptLearner
from trainers.maple import MultiModalPromptLearner
from trainers_testutils import TINY, method_cfg

CLASSNAMES = ["circle", "red_square", "a long striped triangle", "star"]


def assert_rel(actual: torch.Tensor, expected: torch.Tensor, what: str, tol: float = 1e-5) -> None:
    """Relative error of the whole tensor, ||actual - expected|| / ||expected|| <= tol: float32 results of
    differently ordered reductions (fused attention, truncated text) agree to this level, elementwise
    relative errors of near-zero entries are meaningless."""
    error = ((actual - expected).norm() / expected.norm()).item()
    assert error <= tol, f"{what}: relative error {error:.2e} > {tol:.0e}"


@pytest.fixture(scope="module")
def models():
    state_dict = random_state_dict(TINY)
    ours = clip.build_model(dict(state_dict)).float().eval()
    reference = reference_clip().build_model(dict(state_dict)).float().eval()
    return ours, reference


def maple_prompts(p, depth):
    deep_text = [p[f"compound_prompts_text.{k}"] for k in range(depth - 1)]
    deep_vision = [F.linear(t, p[f"compound_prompt_projections.{k}.weight"], p[f"compound_prompt_projections.{k}.bias"])
                   for k, t in enumerate(deep_text)]
    return p["ctx"], deep_text, F.linear(p["ctx"], p["proj.weight"], p["proj.bias"]), deep_vision


def ivlp_prompts(p, depth):
    deep_text = [p[f"text_deep_prompts.{k}"] for k in range(depth - 1)]
    deep_vision = [p[f"vision_deep_prompts.{k}"] for k in range(depth - 1)]
    return p["ctx"], deep_text, p["vision_ctx"], deep_vision


def coop_prompts(p, depth):
    return p["ctx"], [], None, []


CASES = [
    ("MaPLe", MultiModalPromptLearner, "MaPLe/tiny.yaml", ("TRAINER.MAPLE.PROMPT_DEPTH", "2"), maple_prompts,
     "a photo of a"),
    ("IVLP", VLPromptLearner, "IVLP/tiny.yaml", (), ivlp_prompts, "a photo of a"),
    ("CoOp", CoOpLearner, "CoOp/tiny.yaml", (), coop_prompts, "X X X X"),
    ("CoOp-init", CoOpLearner, "CoOp/tiny.yaml", ("TRAINER.COOP.CTX_INIT", "a photo of a"), coop_prompts,
     "a photo of a"),
]


@pytest.mark.parametrize("name,kind,config,opts,prompts_of,prefix", CASES, ids=[c[0] for c in CASES])
def test_matches_official_forward_backward_and_sgd_step(name, kind, config, opts, prompts_of, prefix, models):
    ours_clip, ref = models
    torch.manual_seed(0)
    learner = kind(method_cfg(config, *opts), CLASSNAMES, ours_clip)
    model = PromptedCLIP(ours_clip, learner, SpeedOptions())
    freeze_all_but_prompts(model)
    model.train()
    image = torch.randn(3, 3, 32, 32)
    label = torch.tensor([0, 3, 2])

    ref_params = {n: p.detach().clone().requires_grad_() for n, p in learner.named_parameters()}
    tokenized = reference_clip().tokenize([f"{prefix} {c.replace('_', ' ')}." for c in CLASSNAMES])
    ctx, deep_text, shallow, deep_vision = prompts_of(ref_params, 2)
    text = official_text(ref, tokenized, ctx, deep_text, learner.n_ctx)
    img = official_image(ref, image, shallow, deep_vision)
    text, img = text / text.norm(dim=-1, keepdim=True), img / img.norm(dim=-1, keepdim=True)
    ref_logits = ref.logit_scale.exp() * img @ text.t()
    ref_loss = F.cross_entropy(ref_logits, label)

    logits = model(image)
    loss = F.cross_entropy(logits, label)
    assert_rel(logits, ref_logits, "logits")
    assert_rel(loss, ref_loss, "loss")

    sgd = dict(lr=0.05, momentum=0.9, weight_decay=5e-4)
    ours_opt = torch.optim.SGD([p for p in learner.parameters()], **sgd)
    ref_opt = torch.optim.SGD(list(ref_params.values()), **sgd)
    for opt, value in ((ours_opt, loss), (ref_opt, ref_loss)):
        opt.zero_grad()
        value.backward()
        opt.step()
    for n, p in learner.named_parameters():
        assert_rel(p.grad, ref_params[n].grad, f"gradient of {n}")
        assert_rel(p.detach(), ref_params[n].detach(), f"{n} after one step")
    assert all(not p.requires_grad and p.grad is None for p in ours_clip.parameters())


def test_coop_middle_and_front_positions_match_official_assembly(models):
    ours_clip, ref = models
    torch.manual_seed(0)
    for position in ("middle", "front"):
        learner = CoOpLearner(method_cfg("CoOp/tiny.yaml", "TRAINER.COOP.CLASS_TOKEN_POSITION", position),
                              CLASSNAMES, ours_clip)
        tokenized = reference_clip().tokenize([f"X X X X {c.replace('_', ' ')}." for c in CLASSNAMES])
        embedding = ref.token_embedding(tokenized)
        half = learner.n_ctx // 2
        rows = []
        for i, name_len in enumerate(learner.name_lens):
            prefix, name = embedding[i:i + 1, :1], embedding[i:i + 1, 1 + 4:1 + 4 + name_len]
            rest, ctx = embedding[i:i + 1, 1 + 4 + name_len:], learner.ctx.detach().unsqueeze(0)
            if position == "middle":
                parts = [prefix, ctx[:, :half], name, ctx[:, half:], rest]
            else:
                parts = [prefix, name, ctx, rest]
            rows.append(torch.cat(parts, dim=1))
        torch.testing.assert_close(learner.class_prompts(slice(None)), torch.cat(rows), rtol=0, atol=0)
