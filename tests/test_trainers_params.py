"""Trainable parameter counts on a ViT-B/16-shaped backbone (random weights) equal the official ones
(PROTOCOL.md Appendix B), and only prompt-learner parameters are trainable."""
import pytest
import torch

from clip import clip
from clip.random_models import random_state_dict
from trainers.cocoop import PromptLearner as CoCoOpLearner
from trainers.common import PromptedCLIP, SpeedOptions, freeze_all_but_prompts
from trainers.coop import PromptLearner as CoOpLearner
from trainers.independentVL import VLPromptLearner
from trainers.maple import MultiModalPromptLearner
from trainers.vpt import VisionPromptLearner
from trainers_testutils import method_cfg

CLASSNAMES = ["cat", "golden_retriever", "aircraft carrier"]


@pytest.fixture(scope="module")
def vit_b16():
    # OpenAI's fp16 layout, as the default PREC fp16 uses it
    return clip.build_model(random_state_dict("RandomInit-ViT-B/16"))


def learner(kind, config, clip_model, *opts):
    cfg = method_cfg(config, *opts)
    if kind is VisionPromptLearner:
        return kind(cfg, CLASSNAMES, clip_model, SpeedOptions())
    return kind(cfg, CLASSNAMES, clip_model)


CASES = [
    (CoOpLearner, "CoOp/vit_b16.yaml", (), 8_192),
    (CoOpLearner, "CoOp/vit_b16.yaml", ("TRAINER.COOP.CSC", "True"), 3 * 8_192),
    (CoCoOpLearner, "CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml", (), 35_360),
    (MultiModalPromptLearner, "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", (), 3_555_072),
    (MultiModalPromptLearner, "MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml", (), 1_185_024),
    (VLPromptLearner, "IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml", (), 30_720),
    (VLPromptLearner, "IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml", (), 46_080),
    (VLPromptLearner, "IVLP/vit_b16_c2_ep5_batch4_4ctx_language_only.yaml", (), 24_576),
    (VisionPromptLearner, "VPT/vit_b16_c2_ep5_batch4_4.yaml", (), 73_728),
]


@pytest.mark.parametrize("kind,config,opts,expected", CASES, ids=[c[1] + "".join(c[2]) for c in CASES])
def test_trainable_parameter_count(kind, config, opts, expected, vit_b16):
    model = PromptedCLIP(vit_b16, learner(kind, config, vit_b16, *opts), SpeedOptions())
    trainable = freeze_all_but_prompts(model)
    params = dict(model.named_parameters())
    assert sum(params[n].numel() for n in trainable) == expected
    assert all(not p.requires_grad for p in vit_b16.parameters())
    assert all(p.dtype == torch.float32 for p in model.prompt_learner.parameters())


def test_maple_keeps_official_names_and_identical_deep_couplings(vit_b16):
    pl = learner(MultiModalPromptLearner, "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", vit_b16)
    keys = set(pl.state_dict())
    assert {"ctx", "proj.weight", "proj.bias", "compound_prompts_text.7", "compound_prompt_projections.7.weight",
            "token_prefix", "token_suffix"} <= keys
    assert "compound_prompts_text.8" not in keys
    first = pl.compound_prompt_projections[0].weight
    assert all(torch.equal(layer.weight, first) for layer in pl.compound_prompt_projections)
    # N_CTX 2 with "a photo of a": ctx = embeddings of "a photo", the sequence keeps the whole phrase
    tokens = clip.tokenize("a photo of a cat.")
    embedding = vit_b16.token_embedding(tokens).to(vit_b16.dtype).float()
    assert torch.equal(pl.ctx, embedding[0, 1:3])
    assert torch.equal(pl.token_suffix[0, :3].float(), embedding[0, 3:6])


def test_coop_rederives_n_ctx_from_ctx_init(vit_b16):
    pl = learner(CoOpLearner, "CoOp/vit_b16_ctxv1.yaml", vit_b16)
    assert pl.n_ctx == 4 and pl.ctx.shape[0] == 4
