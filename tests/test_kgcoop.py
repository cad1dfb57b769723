"""KgCoOp (trainers/kgcoop.py): step by step against the official-style file (tests/official_style_kgcoop.py: the
same logits, losses and context in fp32 before and after SGD steps, random and "a photo of a" contexts), and the
pieces: the distance (0 for the same features, 1 for orthogonal ones, the reference normalised in fp16 as the
official cosine does), the hand-crafted reference (fp16 values whatever PREC), a context equal to the hand-crafted
prompt giving a distance of 0 up to fp16 rounding, and the loss CE + W * distance."""
import pytest
import torch
import torch.nn.functional as F

import dassl_e2e_plugin  # noqa: F401  (registers the TinyColors dataset)
import official_style_kgcoop  # noqa: F401  (registers OfficialStyleKgCoOp)
from trainers.kgcoop import fp16_normalize, knowledge_distance
from trainers_testutils import EXACT_TEXT, assert_steps_agree, colors_trainer

CONFIG = "KgCoOp/tiny.yaml"


@pytest.mark.parametrize("ctx_init", ["", "a photo of a"], ids=["random", "a_photo_of_a"])
def test_official_style_file_step_by_step_fp32(ctx_init, colors_root, tmp_path, exact_text):
    # no warm-up and a large LR so that three steps move the logits well beyond the tolerance
    opts = ("OPTIM.LR", "0.5", "OPTIM.WARMUP_EPOCH", "0", "TRAINER.KGCOOP.CTX_INIT", ctx_init, *EXACT_TEXT)
    mine = colors_trainer("KgCoOp", CONFIG, colors_root, str(tmp_path / "ours"), *opts)
    official = colors_trainer("OfficialStyleKgCoOp", CONFIG, colors_root, str(tmp_path / "theirs"), *opts)
    assert {n for n, p in official.model.named_parameters() if p.requires_grad} == {"prompt_learner.ctx"}
    assert torch.equal(mine.model.prompt_learner.ctx, official.model.prompt_learner.ctx)
    # the hand-crafted reference: the official one is fp16, ours holds the same values (normalised twice)
    official_reference = official.model.ori_embedding
    assert official_reference.dtype == torch.float16
    torch.testing.assert_close(mine.model.knowledge_reference(), fp16_normalize(official_reference), rtol=0, atol=0)

    assert_steps_agree(mine, official)  # logits, losses and context, before and after 3 steps


def test_distance_of_unit_features():
    torch.manual_seed(0)
    a = F.normalize(torch.randn(5, 16), dim=-1)
    assert abs(float(knowledge_distance(a, a))) < 1e-3  # the reference side is rounded to fp16
    orthogonal = torch.eye(4)
    assert float(knowledge_distance(orthogonal[:2], orthogonal[2:])) == pytest.approx(1.0)
    assert float(knowledge_distance(orthogonal[:2], -orthogonal[:2])) == pytest.approx(2.0)
    # a mean over classes: one identical class and one orthogonal class give 1 - (1 + 0) / 2
    rows = torch.stack([orthogonal[0], orthogonal[1]])
    assert float(knowledge_distance(rows, torch.stack([orthogonal[0], orthogonal[2]]))) == pytest.approx(0.5)
    # the learned side's length does not matter (it is normalised), and its gradient flows
    scaled = (3.0 * a).requires_grad_()
    distance = knowledge_distance(scaled, torch.roll(a, 1, dims=0))
    distance.backward()
    assert scaled.grad is not None and scaled.grad.abs().sum() > 0
    torch.testing.assert_close(distance, knowledge_distance(a, torch.roll(a, 1, dims=0)))


def test_distance_normalises_the_reference_in_fp16_as_the_official_cosine():
    """torch's CosineSimilarity divides the fp16 reference by its fp16 norm: the official number, not the fp32
    cosine (which would treat the reference as exactly unit after an fp32 division)."""
    torch.manual_seed(1)
    text = F.normalize(torch.randn(6, 64), dim=-1)
    reference = F.normalize(torch.randn(6, 64), dim=-1).half()
    official = 1.0 - torch.nn.CosineSimilarity(dim=1, eps=1e-07)(text, reference).mean()
    assert float(knowledge_distance(text, reference.float())) == pytest.approx(float(official), abs=1e-7)


def test_context_equal_to_the_handcrafted_prompt_gives_distance_zero(colors_root, tmp_path, exact_text):
    """With CTX_INIT "a photo of a" the learned prompts are the hand-crafted ones of the default template
    ("a photo of a {}.", TinyColors has no entry in the table): the distance is 0 up to fp16 rounding, a random
    context is far from them, and the training loss is cross-entropy + W * distance."""
    def distance(trainer):
        trainer.set_model_mode("eval")
        with torch.no_grad():
            return float(trainer.model(image, with_distance=True)[1])

    same = colors_trainer("KgCoOp", CONFIG, colors_root, str(tmp_path / "a"), "TRAINER.KGCOOP.CTX_INIT",
                          "a photo of a", "TRAINER.KGCOOP.PREC", "fp16")
    image = next(iter(same.test_loader))["img"][:4]
    assert abs(distance(same)) < 2e-3
    random = colors_trainer("KgCoOp", CONFIG, colors_root, str(tmp_path / "b"), "TRAINER.KGCOOP.W", "3.0")
    far = distance(random)
    assert far > 0.05
    label = torch.tensor([0, 1, 2, 0])
    loss, logits = random.training_loss(image, label)
    torch.testing.assert_close(loss, F.cross_entropy(logits, label) + 3.0 * far, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prec", ["fp32", "bf16"])
def test_reference_holds_fp16_values_whatever_prec(prec, colors_root, tmp_path, exact_text):
    trainer = colors_trainer("KgCoOp", CONFIG, colors_root, str(tmp_path), "TRAINER.KGCOOP.PREC", prec)
    reference = trainer.model.knowledge_reference()
    assert reference.dtype == torch.float32 and torch.equal(reference, reference.half().float())
    torch.testing.assert_close(reference.norm(dim=-1), torch.ones(reference.shape[0]), rtol=0, atol=2e-3)
    assert trainer.model.clip_model.dtype == torch.float32  # the fp16 copy was temporary
