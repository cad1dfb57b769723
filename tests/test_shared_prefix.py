"""Shared-prefix text encoding (clip/text_plan.py, CLIP.encode_text_embeddings): the leading positions every
prompt holds identically are encoded once and each row encodes only its tail, with the same features and
gradients as encoding every row whole; the prefix is found from the learner's position layout; a planned
encode makes no host-device sync."""
import pytest
import torch

from clip import clip
from clip import model as clip_model
from clip import text_plan
from clip.text_plan import leading_shared_positions, learned_end, plan_text
from sync_testutils import count_host_syncs
from trainers.cocoop import CoCoOpCLIP
from trainers.cocoop import PromptLearner as CoCoOpLearner
from trainers.common import SpeedOptions
from trainers.coop import PromptLearner as CoOpLearner
from trainers.maple import MultiModalPromptLearner
from trainers_testutils import fp32_clip, method_cfg

NAMES = ["tench", "great white shark", "x", "goldfish", "tiger shark", "hen"]



@pytest.fixture(autouse=True)
def share_any_prefix(monkeypatch):
    """These tests use a few short prompts, which the cost rule would encode whole: share every prefix."""
    monkeypatch.setattr(text_plan, "_PREFIX_COST_IN_POSITIONS", 0)


@pytest.fixture(scope="module")
def tiny():
    return fp32_clip()


def _prompts(model, ctx: torch.Tensor, repeat: int = 1):
    """"X X <name>." rows with `ctx` [2, D] broadcast into positions 1-2, repeated `repeat` times."""
    tokens = clip.tokenize([f"X X {name}." for name in NAMES] * repeat)
    with torch.no_grad():
        embedding = model.token_embedding(tokens)
    rows = len(tokens)
    return torch.cat([embedding[:, :1], ctx.expand(rows, -1, -1), embedding[:, 3:]], dim=1), tokens.argmax(-1)


def assert_close_at_scale(got: torch.Tensor, expected: torch.Tensor, tolerance: float) -> None:
    """Equal within `tolerance` of the expected tensor's largest magnitude. Gradients summed over many rows in
    another order differ by fp32 rounding of their largest terms (measured: 7e-7 of the scale), which on some
    CPUs exceeds an element-wise 1e-5 for elements of magnitude 30."""
    scale = expected.abs().max()
    torch.testing.assert_close(got / scale, expected / scale, rtol=0, atol=tolerance)


def _features_and_grads(model, plan_of, precision: str = "fp32", checkpointing: bool = False, repeat: int = 1):
    generator = torch.Generator().manual_seed(0)
    width = model.transformer.width
    ctx = torch.randn(2, width, generator=generator).requires_grad_()
    deep = torch.randn(2, width, generator=generator).requires_grad_()
    embeddings, eot = _prompts(model, ctx, repeat)
    plan = plan_of(eot.tolist())
    autocast = {"bf16": torch.bfloat16, "amp": torch.float16}.get(precision)
    model.transformer.checkpointing = checkpointing
    try:
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            features = model.encode_text_embeddings(embeddings, eot, [deep], plan=plan)
        features.float().square().sum().backward()
    finally:
        model.transformer.checkpointing = False
    return plan, features.detach().float(), ctx.grad, deep.grad


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16", "amp"])
@pytest.mark.parametrize("fused", [True, False])
def test_planned_prefix_gives_the_features_and_gradients_of_whole_rows(tiny, precision, fused):
    model = fp32_clip().half() if precision == "fp16" else tiny
    tolerance = {"fp32": 1e-5, "fp16": 2e-2, "bf16": 5e-2, "amp": 2e-2}[precision]
    with clip_model.fused_attention(fused):
        whole = _features_and_grads(model, lambda eot: plan_text(eot, 77, deep_prompt_tokens=2), precision)
        shared = _features_and_grads(model, lambda eot: plan_text(eot, 77, deep_prompt_tokens=2, shared_prefix=3),
                                     precision)
    assert whole[0].prefix == 0 and shared[0].prefix == 3  # SOS and the two context vectors
    for expected, got in zip(whole[1:], shared[1:]):
        assert_close_at_scale(got, expected, tolerance)


@pytest.mark.parametrize("truncate", [True, False])
def test_prefix_groups_and_checkpointing_keep_features_and_gradients(tiny, truncate):
    whole = _features_and_grads(tiny, lambda eot: plan_text(eot, 77, truncate=truncate, deep_prompt_tokens=2),
                                repeat=3)
    for checkpointing in (False, True):
        grouped = _features_and_grads(
            tiny, lambda eot: plan_text(eot, 77, truncate=truncate, deep_prompt_tokens=2, shared_prefix=3,
                                        prefix_groups=3), checkpointing=checkpointing, repeat=3)
        assert grouped[0].prefix == 3 and grouped[0].prefix_groups == 3
        for expected, got in zip(whole[1:], grouped[1:]):
            assert_close_at_scale(got, expected, 1e-5)


def test_prefix_is_encoded_once_with_deep_prompts_applied_to_it(tiny):
    """The first block sees the prefix as one row of 3 positions, then the tails; the prefix part of a deep
    prompt enters the prefix once, the rest enters every tail at its first positions."""
    width = tiny.transformer.width
    ctx = torch.randn(2, width)
    deep = torch.randn(4, width)  # positions 1..4: 1-2 in the prefix, 3-4 in the tails
    embeddings, eot = _prompts(tiny, ctx)
    plan = plan_text(eot.tolist(), 77, deep_prompt_tokens=4, shared_prefix=3)
    seen = []
    hooks = [block.register_forward_pre_hook(lambda m, args: seen.append(args[0])) for block in tiny.transformer.resblocks]
    try:
        with torch.no_grad():
            tiny.encode_text_embeddings(embeddings, eot, [deep], plan=plan)
    finally:
        for hook in hooks:
            hook.remove()
    n_layers = tiny.transformer.layers
    prefix_inputs, tail_inputs = seen[:n_layers], seen[n_layers:]
    assert prefix_inputs[0].shape == (1, 3, width)
    assert torch.equal(prefix_inputs[1][0, 1:3], deep[:2])
    # The tails are packed: each row's positions 3..EOT, one after the other, no padding.
    assert tail_inputs[0].shape == (int((eot + 1 - 3).sum()), width)
    row_start = plan.packing(torch.device("cpu")).row_start
    for start in row_start.tolist():
        assert torch.equal(tail_inputs[1][start:start + 2], deep[2:])


def test_unplanned_encode_shares_found_prefix_only_without_gradients(tiny):
    tokens = clip.tokenize([f"a photo of a {name}." for name in NAMES])
    eot = tokens.argmax(-1)
    with torch.no_grad():
        embeddings = tiny.token_embedding(tokens)
        whole = tiny.encode_text_embeddings(embeddings, eot, share_prefix=False)
        shared = tiny.encode_text_embeddings(embeddings, eot)
        assert tiny._plan_from_inputs(embeddings, eot, [], None, None).prefix == 5  # SOS "a photo of a"
    torch.testing.assert_close(shared, whole, rtol=1e-5, atol=1e-5)
    # Two classes with separate context tensors of equal value must each get their own gradient: with
    # gradients, an encode without a plan shares nothing.
    width = tiny.transformer.width
    value = torch.randn(2, width, generator=torch.Generator().manual_seed(2))
    grads = []
    for share in (False, True):
        ctx = value.repeat(len(NAMES), 1, 1).requires_grad_()
        rows = torch.cat([embeddings[:, :1], ctx, embeddings[:, 3:]], dim=1)
        weights = torch.arange(1.0, len(NAMES) + 1).unsqueeze(1)
        (tiny.encode_text_embeddings(rows, eot, share_prefix=share) * weights).sum().backward()
        grads.append(ctx.grad)
    torch.testing.assert_close(grads[1], grads[0])
    assert not torch.allclose(grads[0][0], grads[0][1])


def test_leading_shared_positions_and_plan_limits():
    layout = torch.tensor([[7, -1, -2, 5, 9, 3], [7, -1, -2, 5, 8, 3]])
    assert leading_shared_positions(layout) == 4
    assert leading_shared_positions(layout[:1]) == 6
    assert plan_text([4, 5], 6, shared_prefix=4).prefix == 4
    assert plan_text([2, 5], 6, shared_prefix=4).prefix == 2  # the EOT stays in every row's tail
    assert plan_text([4], 6, shared_prefix=4).prefix == 0  # one row: nothing to share
    assert plan_text([4, 5, 4, 5], 6, shared_prefix=4, prefix_groups=2).rows_per_prefix == 2
    with pytest.raises(ValueError, match="prefix groups"):
        plan_text([4, 5, 4], 6, prefix_groups=2)
    with pytest.raises(ValueError, match="CPU tensor"):
        leading_shared_positions(layout.to("meta"))
    # constant tails: every learned position (ids < 0: positions 1-2 here) inside the shared prefix
    assert learned_end(layout) == 3 and learned_end(layout.abs()) == 0
    assert plan_text([4, 5], 6, shared_prefix=4, learned_positions_end=3).constant_tail
    assert not plan_text([4, 5], 6, shared_prefix=2, learned_positions_end=3).constant_tail
    assert not plan_text([4, 5], 6, shared_prefix=4).constant_tail  # unknown: read with gradients
    assert not plan_text([4], 6, shared_prefix=4, learned_positions_end=3).constant_tail  # nothing shared


def test_a_constant_tail_is_read_detached_with_the_same_prefix_gradients(tiny):
    tokens = clip.tokenize([f"X X {name}." for name in NAMES])
    eot = tokens.argmax(-1)
    with torch.no_grad():
        embeddings = tiny.token_embedding(tokens)
    embeddings.requires_grad_()
    outputs = {}
    for constant in (False, True):
        plan = plan_text(eot.tolist(), 77, shared_prefix=3, learned_positions_end=3 if constant else None)
        assert plan.constant_tail == constant
        embeddings.grad = None
        features = tiny.encode_text_embeddings(embeddings, eot, [], plan=plan)
        features.square().sum().backward()
        outputs[constant] = features.detach(), embeddings.grad.clone()
    (features, grad), (features_detached, grad_detached) = outputs[False], outputs[True]
    assert torch.equal(features_detached, features)
    assert grad[:, 3:].abs().sum() > 0 and not grad_detached[:, 3:].any()  # the tails get no gradient
    torch.testing.assert_close(grad_detached[:, :3], grad[:, :3], rtol=0, atol=1e-6 * grad.abs().max())


@pytest.mark.parametrize("opts, expected", [
    ((), 1 + 4),                                               # SOS + a unified context of 4
    (("TRAINER.COOP.CSC", "True"), 1),                         # class-specific contexts: SOS alone
    (("TRAINER.COOP.CLASS_TOKEN_POSITION", "front"), 1),       # the class name right after SOS
    (("TRAINER.COOP.CLASS_TOKEN_POSITION", "middle"), 1 + 2),  # SOS + the first half of the context
    (("TRAINER.COOP.CTX_INIT", "a photo of a"), 1 + 4),
])
def test_coop_prefix_is_found_from_its_layout(tiny, opts, expected):
    learner = CoOpLearner(method_cfg("CoOp/tiny.yaml", *opts), NAMES, tiny)
    everything = slice(0, len(NAMES))
    assert leading_shared_positions(learner.position_layout(everything)) == expected
    # the layout follows the prompts: equal ids give equal embeddings
    layout, prompts = learner.position_layout(everything), learner.class_prompts(everything)
    same_id = layout == layout[:1]
    same_value = (prompts == prompts[:1]).all(dim=-1)
    assert bool((same_value | ~same_id).all())
    # the tails are constant exactly when the context is unified and sits right after SOS
    assert (learned_end(layout) <= expected) == (opts in ((), ("TRAINER.COOP.CTX_INIT", "a photo of a")))


def test_maple_prefix_includes_the_class_independent_words(tiny):
    learner = MultiModalPromptLearner(method_cfg("MaPLe/tiny.yaml"), ["shark", "great white shark"], tiny)
    # [SOS] ctx ctx "of a" then the names: "shark" vs "great"
    assert leading_shared_positions(learner.position_layout(slice(0, 2))) == 5


def test_planned_text_encodes_make_no_host_sync(tiny):
    learner = MultiModalPromptLearner(method_cfg("MaPLe/tiny.yaml"), NAMES, tiny)
    options = SpeedOptions()
    learner.class_text_features(tiny, options)  # builds the plan: host-side work, once
    with count_host_syncs() as calls:
        learner.class_text_features(tiny, options).sum().backward()
    assert calls == []
    torch.manual_seed(0)
    cocoop = CoCoOpCLIP(tiny, CoCoOpLearner(method_cfg("CoCoOp/tiny.yaml"), NAMES, tiny), options).train()
    image = torch.randn(2, 3, 32, 32)
    cocoop(image)
    with count_host_syncs() as calls:
        cocoop(image)
    assert calls == []
    # the counter does see syncs: an encode without a plan copies the EOT positions to the host
    tokens = clip.tokenize(NAMES)
    with count_host_syncs() as calls:
        tiny.encode_text(tokens)
    assert "tolist" in calls


def test_a_prefix_is_shared_only_where_it_saves_more_than_its_own_pass(monkeypatch):
    # With the real cost (this module's fixture lowers it): 10 prompts with a prefix of 5 positions would save
    # 45 positions, so they are encoded whole; 500 save 2495 and share it. Per image (CoCoOp, 2 images), the
    # saving counts every row but one per image.
    monkeypatch.undo()
    cost = text_plan._PREFIX_COST_IN_POSITIONS
    for rows, groups, shared in [(10, 1, False), (500, 1, True), (2 * 100, 2, True), (2 * 10, 2, False)]:
        plan = plan_text([12] * rows, 77, shared_prefix=5, prefix_groups=groups)
        assert plan.prefix == (5 if shared else 0), (rows, groups)
        assert shared == ((rows - groups) * 5 > cost)
