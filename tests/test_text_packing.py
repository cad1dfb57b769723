"""Packed text tails (clip/text_plan.py `TailPacking`): every row's computed positions packed into one [tokens, D]
matrix, attention per length group over padded rows. The indices are checked by hand on a small plan, and the
packed encode against encoding whole, unshared rows: features and gradients, with several length groups,
padding, prefix groups and deep prompts that reach into the tails."""
import pytest
import torch

from clip import clip
from clip import text_plan
from clip.text_plan import plan_text
from trainers_testutils import fp32_clip

CPU = torch.device("cpu")
NAMES = ["cat", "great white shark", "x", "a very long and detailed name of a striped bird", "owl", "red fox"]


@pytest.fixture(scope="module")
def tiny():
    return fp32_clip()


def test_packing_of_one_padded_group():
    # EOTs at 2, 4, 2, 3 in rows of 8 positions: rows cut after their EOT (3, 5, 3, 4 positions), one group
    # (the real group cost keeps four short rows together), padded to 5 for attention.
    plan = plan_text([2, 4, 2, 3], 8)
    assert plan.ends == (3, 5, 3, 4) and plan.groups == (((0, 1, 2, 3), 5),)
    packing = plan.packing(CPU)
    assert packing.tokens == 15
    assert packing.token_source.tolist() == [0, 1, 2, 8, 9, 10, 11, 12, 16, 17, 18, 24, 25, 26, 27]
    assert packing.positions.tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3]
    assert packing.row_start.tolist() == [0, 3, 8, 11]
    (group,) = packing.groups
    assert (group.tokens, group.count, group.length, group.owner) == (15, 4, 5, None)
    assert packing.group_tokens == [15]
    assert group.pad_source.tolist() == [0, 1, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 10, 11, 12, 13, 14, 14]
    assert group.valid.tolist() == [0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 15, 16, 17, 18]
    # padded then unpadded gives the tokens back
    tokens = torch.arange(15.0).unsqueeze(1)
    assert torch.equal(group.unpadded(group.padded(tokens)), tokens)
    assert plan.packing(CPU) is packing  # made once per device


def test_packing_of_length_groups_with_a_shared_prefix(monkeypatch):
    monkeypatch.setattr(text_plan, "_GROUP_COST_IN_POSITIONS", 0)  # a group per tail length
    monkeypatch.setattr(text_plan, "_PREFIX_COST_IN_POSITIONS", 0)
    # two prefix groups (CoCoOp: two images) of two rows; a prefix of 2 positions; tails of 2, 4, 2, 3
    plan = plan_text([3, 5, 3, 4], 8, shared_prefix=2, prefix_groups=2)
    assert plan.prefix == 2 and plan.groups == (((0, 2), 4), ((3,), 5), ((1,), 6))
    packing = plan.packing(CPU)
    assert packing.token_source.tolist() == [2, 3, 18, 19, 26, 27, 28, 10, 11, 12, 13]
    assert packing.positions.tolist() == [2, 3, 2, 3, 2, 3, 4, 2, 3, 4, 5]
    assert packing.row_start.tolist() == [0, 7, 2, 4]
    assert [(g.tokens, g.count, g.length) for g in packing.groups] == [(4, 2, 2), (3, 1, 3), (4, 1, 4)]
    assert packing.group_tokens == [4, 3, 4]
    assert all(g.pad_source is None and g.valid is None for g in packing.groups)  # exact lengths: no padding
    assert [g.owner.tolist() for g in packing.groups] == [[0, 1], [1], [0]]


def _encode(model, plan_of, deep_per_row: bool):
    """Features and the gradients of the context vectors, the deep prompt and the embeddings, for prompts "X X
    <name>." in two prefix groups (each with its own two context vectors, as CoCoOp's per-image contexts)."""
    generator = torch.Generator().manual_seed(0)
    width = model.transformer.width
    tokens = clip.tokenize([f"X X {name}." for name in NAMES] * 2)
    rows = len(tokens)
    with torch.no_grad():
        embedding = model.token_embedding(tokens)
    embedding.requires_grad_()
    ctx = torch.randn(2, 2, width, generator=generator).requires_grad_()
    per_group = ctx.repeat_interleave(len(NAMES), dim=0)
    embeddings = torch.cat([embedding[:, :1], per_group, embedding[:, 3:]], dim=1)
    if deep_per_row:  # each row its own deep prompt: nothing of it can be shared
        deep = torch.randn(rows, 3, width, generator=generator).requires_grad_()
    else:  # one deep prompt of 4 positions: 1-2 fall in the prefix, 3-4 in the tails
        deep = torch.randn(4, width, generator=generator).requires_grad_()
    eot = tokens.argmax(-1)
    plan = plan_of(eot.tolist(), deep.shape[-2])
    features = model.encode_text_embeddings(embeddings, eot, [deep], plan=plan)
    features.square().sum().backward()
    # A shared prefix is read from one row of its group: the prefix positions' gradient reaches that row, so
    # compare their sums per group; the positions after "X X" are every row's own.
    own, shared = embedding.grad[:, 3:], embedding.grad[:, :3].view(2, len(NAMES), 3, width).sum(dim=1)
    return plan, [features.detach(), ctx.grad, deep.grad, own, shared]


@pytest.mark.parametrize("deep_per_row", [False, True])
def test_packed_groups_give_the_features_and_gradients_of_whole_rows(tiny, monkeypatch, deep_per_row):
    monkeypatch.setattr(text_plan, "_PREFIX_COST_IN_POSITIONS", 0)
    whole = _encode(tiny, lambda eot, n: plan_text(eot, 77, truncate=False, deep_prompt_tokens=n), deep_per_row)
    prefix = 1 if deep_per_row else 3  # a per-row deep prompt ends the shared prefix at SOS
    for group_cost in (0, 10 ** 6):  # a group per tail length (no padding), one padded group
        monkeypatch.setattr(text_plan, "_GROUP_COST_IN_POSITIONS", group_cost)
        plan, packed = _encode(tiny, lambda eot, n: plan_text(eot, 77, deep_prompt_tokens=n, shared_prefix=prefix,
                                                              prefix_groups=2), deep_per_row)
        assert plan.prefix == prefix and (len(plan.groups) > 1) == (group_cost == 0)
        assert any(g.pad_source is not None for g in plan.packing(CPU).groups) == (group_cost > 0)
        for expected, got in zip(whole[1], packed):
            scale = expected.abs().max()
            torch.testing.assert_close(got / scale, expected / scale, rtol=0, atol=1e-5)
    assert whole[1][3].abs().sum() > 0  # the tails' embeddings get gradients (they are not constant)


def test_a_plan_for_other_embeddings_is_refused(tiny):
    tokens = clip.tokenize(NAMES)
    embeddings = tiny.token_embedding(tokens).detach()
    plan = plan_text(tokens.argmax(-1).tolist(), 77)
    with pytest.raises(ValueError, match="6 rows of 77 positions but embeddings of 6 rows of 20"):
        tiny.encode_text_embeddings(embeddings[:, :20], tokens.argmax(-1), plan=plan)
