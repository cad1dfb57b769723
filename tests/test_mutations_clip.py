"""Guards against plausible one-line bugs in clip/ that the rest of the suite let through.

The length-grouped text truncation (many prompts of very different lengths, e.g. ImageNet's class names
or CoCoOp's B x n_cls prompts) packs the rows group by group and must read each row's features back in row
order; most other tests only ever produce one group.
"""
import pytest
import torch

from clip import clip
from clip import model as clip_model
from clip.text_plan import _length_groups
from clip.random_models import random_state_dict
from trainers_testutils import TINY

SHORT = ["cat", "a dog", "x", "red square", "star", "an owl"]
LONG = ("a very long and rather detailed description of a small striped yellow and black bird sitting "
        "quietly on a thin wooden branch in the early morning light")


@pytest.fixture(scope="module")
def tiny():
    return clip.build_model(random_state_dict(TINY)).float().eval()


def mixed_texts():
    """40 short prompts with 4 long ones interleaved: grouping by length pays off."""
    texts = [f"a photo of a {SHORT[i % len(SHORT)]}." for i in range(40)]
    for k, position in enumerate((3, 17, 18, 31)):
        texts.insert(position, f"{LONG} number {k}.")
    return texts


@torch.no_grad()
def test_length_groups_give_the_features_of_each_row_in_order(tiny):
    tokens = clip.tokenize(mixed_texts())
    eot = tokens.argmax(dim=-1)
    assert len(_length_groups((eot + 1).tolist())) > 1  # the grouped path is exercised
    embeddings = tiny.token_embedding(tokens)
    width = tiny.transformer.width
    generator = torch.Generator().manual_seed(0)
    shared = [torch.randn(2, width, generator=generator)]
    per_row = [torch.randn(len(tokens), 2, width, generator=generator)]
    for deep in ([], shared, per_row):
        full = tiny.encode_text_embeddings(embeddings, eot, deep, truncate=False)
        grouped = tiny.encode_text_embeddings(embeddings, eot, deep, truncate=True)
        torch.testing.assert_close(grouped, full, rtol=1e-5, atol=1e-5)
    # and rows are not interchangeable: the long ones differ from the short ones
    full = tiny.encode_text_embeddings(embeddings, eot, truncate=False)
    assert not torch.allclose(full[3], full[4], atol=1e-3)
