"""The off-by-default memory/speed switches: activation checkpointing of the text encoder gives the same
features and gradients, compiled blocks keep their outputs and parameter names, and the config keys
TRAINER.SPEEDUPS.TEXT_CHECKPOINTING / .COMPILE reach the model a trainer builds."""
import copy

import pytest
import torch

from benchmarks.measure import Spec, build_cfg, build_trainer_on_classes, load_classnames
from clip import clip
from clip.model import Transformer, fused_attention
from clip.random_models import random_state_dict
from clip.text_plan import plan_text

TINY = "RandomInit-ViT-Tiny"
DEMO_MAPLE = "configs/trainers/MaPLe/tiny.yaml"


@pytest.fixture(scope="module")
def tiny():
    return clip.build_model(random_state_dict(TINY)).float().eval()


def _text_features_and_grads(model, checkpointing: bool, fused: bool):
    """Prompted text features of three prompts and the gradients of the shallow and deep prompts."""
    torch.manual_seed(0)
    tokens = clip.tokenize(["a photo of a tench.", "a photo of a great white shark.", "X X"])
    width = model.transformer.width
    shallow = torch.randn(2, width, requires_grad=True)
    deep = [torch.randn(2, width, requires_grad=True)]
    with torch.no_grad():
        embedding = model.token_embedding(tokens)
    embedding = torch.cat([embedding[:, :1], shallow.expand(3, -1, -1), embedding[:, 3:]], dim=1)
    model.transformer.checkpointing = checkpointing
    try:
        with fused_attention(fused):
            features = model.encode_text_embeddings(embedding, tokens.argmax(-1), deep_prompts=deep)
        # backward outside the attention context, as the trainers do: the recomputation must still use
        # the attention path of the forward pass
        features.square().sum().backward()
    finally:
        model.transformer.checkpointing = False
    return features.detach(), shallow.grad, deep[0].grad


@pytest.mark.parametrize("fused", [True, False])
def test_text_checkpointing_gives_identical_features_and_gradients(tiny, fused):
    plain = _text_features_and_grads(tiny, checkpointing=False, fused=fused)
    checkpointed = _text_features_and_grads(tiny, checkpointing=True, fused=fused)
    for a, b in zip(plain, checkpointed):
        assert torch.equal(a, b)


def test_checkpointing_is_skipped_without_gradients(tiny, monkeypatch):
    calls = []
    monkeypatch.setattr("clip.model.checkpoint", lambda *args, **kwargs: calls.append(1))
    tiny.transformer.checkpointing = True
    try:
        with torch.no_grad():
            features = tiny.encode_text(clip.tokenize(["a photo of a hen."]))
    finally:
        tiny.transformer.checkpointing = False
    assert calls == [] and torch.isfinite(features).all()


def test_compiled_blocks_keep_outputs_and_parameter_names(tiny):
    eager = tiny.transformer
    compiled = copy.deepcopy(eager)
    compiled.compile_blocks(backend="eager")  # dynamo's tracing without inductor's compile time
    x = torch.randn(3, 5, eager.width, generator=torch.Generator().manual_seed(0))
    # packed text tokens (clip/text_plan.py): rows of 3, 5, 3 and 4 positions, one padded attention group
    packing = plan_text([2, 4, 2, 3], 8).packing(torch.device("cpu"))
    packed = torch.randn(packing.tokens, eager.width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(compiled.forward_batch_first(x), eager.forward_batch_first(x))
        torch.testing.assert_close(compiled.forward_packed(packed, packing), eager.forward_packed(packed, packing))
    assert list(compiled.state_dict()) == list(eager.state_dict())


def _tiny_maple(*opts: str):
    spec = Spec("MaPLe", DEMO_MAPLE, "ViT-Tiny", classes=4, phase="train", opts=list(opts))
    cfg = build_cfg(spec)
    torch.manual_seed(cfg.SEED)
    return build_trainer_on_classes(cfg, load_classnames(4)), cfg


def _one_step(trainer) -> dict:
    generator = torch.Generator().manual_seed(3)
    batch = {"img": torch.randn(4, 3, 32, 32, generator=generator), "label": torch.tensor([0, 1, 2, 3])}
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 2
    trainer.forward_backward(batch)
    return {k: v.detach().clone() for k, v in trainer.model.prompt_learner.named_parameters()}


def test_text_checkpointing_switch_reaches_the_trainer_and_changes_no_number():
    plain, _ = _tiny_maple()
    checkpointed, _ = _tiny_maple("TRAINER.SPEEDUPS.TEXT_CHECKPOINTING", "True")
    assert not plain.model.clip_model.transformer.checkpointing
    assert checkpointed.model.clip_model.transformer.checkpointing
    assert not checkpointed.model.clip_model.visual.transformer.checkpointing
    after_plain, after_checkpointed = _one_step(plain), _one_step(checkpointed)
    assert after_plain.keys() == after_checkpointed.keys()
    for name in after_plain:
        assert torch.equal(after_plain[name], after_checkpointed[name]), name


def test_compile_switch_compiles_both_towers(monkeypatch):
    compiled = []
    monkeypatch.setattr(Transformer, "compile_blocks", lambda self, **kwargs: compiled.append(self.causal))
    _tiny_maple()
    assert compiled == []
    _tiny_maple("TRAINER.SPEEDUPS.COMPILE", "True")
    assert sorted(compiled) == [False, True]  # the vision tower and the (causal) text tower


def test_length_groups_split_many_rows_of_mixed_length_and_keep_few_rows_together():
    from clip.text_plan import _length_groups

    assert _length_groups([9, 12, 9, 30]) == [[0, 1, 2, 3]]
    # splitting 2 rows of 22 from 100 rows of 20 saves fewer positions than a group costs
    many = [20] * 100 + [8] * 300 + [22] * 2
    groups = _length_groups(many)
    assert sorted(row for group in groups for row in group) == list(range(402))
    assert [sorted({many[row] for row in group}) for group in groups] == [[8], [20, 22]]


def test_length_grouped_truncation_gives_the_full_context_features_and_gradients(tiny):
    names = load_classnames(1000)[::3]  # 334 real names: several length groups
    tokens = clip.tokenize([f"X X {name}." for name in names])
    width = tiny.transformer.width
    generator = torch.Generator().manual_seed(1)
    results = []
    for truncate in (False, True):
        shallow = torch.randn(2, width, generator=generator.manual_seed(1)).requires_grad_()
        deep = [torch.randn(2, width, generator=generator.manual_seed(2)).requires_grad_()]
        with torch.no_grad():
            embedding = tiny.token_embedding(tokens)
        embedding = torch.cat([embedding[:, :1], shallow.expand(len(names), -1, -1), embedding[:, 3:]], dim=1)
        features = tiny.encode_text_embeddings(embedding, tokens.argmax(-1), deep, truncate=truncate)
        features.square().sum().backward()
        results.append((features.detach(), shallow.grad, deep[0].grad))
    for full, grouped in zip(*results):
        torch.testing.assert_close(grouped, full, rtol=1e-5, atol=1e-5)
