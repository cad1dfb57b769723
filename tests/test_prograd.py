"""ProGrad (trainers/prograd.py): step by step against the official-style file (tests/official_style_prograd.py: the
same logits, both losses and context in fp32 before and after SGD steps, random and template-initialised contexts),
and the pieces: the update `prograd_backward_and_update` (a conflicting gradient loses its component along the
zero-shot gradient, by LAMBDA; an aligned or orthogonal one is kept; per parameter tensor; a parameter without a
gradient is left alone; a GradScaler changes nothing), the T^2-scaled distillation loss, and the context initialised
from a template with more tokens than words."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dassl_e2e_plugin  # noqa: F401  (registers the TinyColors dataset)
import official_style_prograd
from clip.clip import tokenize
from dassl.config import ConfigError
from dassl.engine.trainer import TrainerBase
from trainers.prograd import ProGradPromptLearner, prograd_losses
from trainers_testutils import EXACT_TEXT, assert_steps_agree, colors_trainer, fp32_clip, method_cfg

CONFIG = "ProGrad/tiny.yaml"


# TinyColors has no template of its own: "a photo of a {}.", so CTX_INIT True puts "a photo of a" in the last 4
# of the 6 context vectors and zeros in the first 2
@pytest.mark.parametrize("init", [("False", "4"), ("True", "6")], ids=["random", "template"])
def test_official_style_file_step_by_step_fp32(init, colors_root, tmp_path, exact_text):
    opts = ("OPTIM.LR", "0.5", "OPTIM.WARMUP_EPOCH", "0", "TRAINER.PROGRAD.CTX_INIT", init[0],
            "TRAINER.PROGRAD.N_CTX", init[1], *EXACT_TEXT)
    mine = colors_trainer("ProGrad", CONFIG, colors_root, str(tmp_path / "ours"), *opts)
    official = colors_trainer("OfficialStyleProGrad", CONFIG, colors_root, str(tmp_path / "theirs"), *opts)
    assert {n for n, p in official.model.named_parameters() if p.requires_grad} == {"prompt_learner.ctx"}
    assert torch.equal(mine.model.prompt_learner.ctx, official.model.prompt_learner.ctx)

    assert_steps_agree(mine, official)  # logits, losses and context, before and after 3 steps


def _stepped(task_grads, general_grads, lambda_=1.0, scaler=None, unused=False):
    """The parameters after one prograd_backward_and_update with SGD(lr 1) on linear losses whose gradients are
    the given vectors (one parameter tensor per vector), starting at zero; `unused`: one more parameter that
    neither loss reaches."""
    params = nn.ParameterList(nn.Parameter(torch.zeros(len(g))) for g in task_grads)
    if unused:
        params.append(nn.Parameter(torch.ones(2)))
    trainer = TrainerBase()
    trainer.register_model("prompt", params, torch.optim.SGD(params.parameters(), lr=1.0), scaler=scaler)
    task = sum((torch.tensor(g) * p).sum() for g, p in zip(task_grads, params))
    general = sum((torch.tensor(g) * p).sum() for g, p in zip(general_grads, params))
    trainer.prograd_backward_and_update(task, general, lambda_)
    return [p.detach() for p in params]


def test_a_conflicting_gradient_loses_its_component_along_the_general_direction():
    # g = (1, 0) against u = (-1, 1) / sqrt 2: g - (g . u) u = (1, 0) - (-1/2, 1/2) = (1/2, 1/2), the step -g'
    (stepped,) = _stepped([[1.0, 0.0]], [[-1.0, 1.0]])
    torch.testing.assert_close(stepped, torch.tensor([-0.5, -0.5]))
    assert abs(float(stepped @ torch.tensor([-1.0, 1.0]))) < 1e-6  # what is left is orthogonal to the general one
    # LAMBDA 0.5 removes half of that component: (1, 0) - 0.5 (-1/2, 1/2)
    (half,) = _stepped([[1.0, 0.0]], [[-1.0, 1.0]], lambda_=0.5)
    torch.testing.assert_close(half, -torch.tensor([0.75, 0.25]))


@pytest.mark.parametrize("general", [[1.0, 1.0], [0.0, 1.0]], ids=["aligned", "orthogonal"])
def test_a_gradient_that_does_not_conflict_is_kept(general):
    (stepped,) = _stepped([[1.0, 0.0]], [general])
    torch.testing.assert_close(stepped, torch.tensor([-1.0, 0.0]))


def test_the_projection_is_per_parameter_tensor_and_skips_parameters_without_gradient():
    # the first tensor conflicts, the second does not: only the first is projected; the third gets no gradient
    first, second, unused = _stepped([[1.0, 0.0], [2.0, 1.0]], [[-1.0, 1.0], [1.0, 0.0]], unused=True)
    torch.testing.assert_close(first, torch.tensor([-0.5, -0.5]))
    torch.testing.assert_close(second, torch.tensor([-2.0, -1.0]))
    assert torch.equal(unused, torch.ones(2))


def test_a_grad_scaler_scales_both_losses_and_leaves_the_step_unchanged():
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    (stepped,) = _stepped([[1.0, 0.0]], [[-1.0, 1.0]], scaler=scaler)
    torch.testing.assert_close(stepped, torch.tensor([-0.5, -0.5]))


def test_the_distillation_loss_is_the_t2_scaled_soft_cross_entropy():
    torch.manual_seed(0)
    logits, teacher, label = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    xe, kl = prograd_losses(logits, teacher, label, temperature=2.0)
    torch.testing.assert_close(xe, F.cross_entropy(logits, label))
    expected = -(F.softmax(teacher / 2, dim=-1) * F.log_softmax(logits / 2, dim=-1)).sum(1).mean() * 4
    torch.testing.assert_close(kl, expected)
    official_xe, official_kl = official_style_prograd.prograd_loss(logits, teacher, label, 2.0)
    torch.testing.assert_close((xe, kl), (official_xe, official_kl))
    # its gradient T (softmax(z/T) - softmax(z0/T)) / B vanishes where the student predicts as the teacher
    student = teacher.clone().requires_grad_()
    prograd_losses(student, teacher, label, temperature=2.0)[1].backward()
    assert student.grad.abs().max() < 1e-6
    # and the teacher gets no gradient
    teacher_leaf = teacher.clone().requires_grad_()
    prograd_losses(logits.clone().requires_grad_(), teacher_leaf, label, 2.0)[1].backward()
    assert teacher_leaf.grad is None


def test_context_from_a_template_with_more_tokens_than_words():
    """OxfordPets' "a type of pet, a photo of a": 8 words, 9 tokens ("pet" and ","). As officially, with N_CTX 9
    the last 8 context vectors start as its first 8 tokens, the first one at zero, and its 9th token, "a", stays a
    fixed word after the context."""
    clip = fp32_clip()
    cfg = method_cfg(CONFIG, "DATASET.NAME", "OxfordPets", "TRAINER.PROGRAD.CTX_INIT", "True",
                     "TRAINER.PROGRAD.N_CTX", "9")
    names = ["abyssinian", "great pyrenees"]
    ours = ProGradPromptLearner(cfg, names, clip, method="PROGRAD")
    official = official_style_prograd.PromptLearner(cfg, names, clip)
    assert torch.equal(ours.ctx, official.ctx)
    assert torch.equal(ours.ctx[0], torch.zeros_like(ours.ctx[0])) and ours.ctx[1:].abs().sum(-1).min() > 0
    with torch.no_grad():
        assert torch.equal(ours.class_prompts(slice(None)), official())
    assert torch.equal(ours.tokenized_prompts, official.tokenized_prompts)
    assert int(ours.tokenized_prompts[0, 1 + 9]) == int(tokenize("a")[0, 1])  # the fixed word after the context

    too_few = method_cfg(CONFIG, "DATASET.NAME", "OxfordPets", "TRAINER.PROGRAD.CTX_INIT", "True",
                         "TRAINER.PROGRAD.N_CTX", "7")
    with pytest.raises(ConfigError, match="N_CTX 7 is smaller than the 8 words"):
        ProGradPromptLearner(too_few, names, clip, method="PROGRAD")
