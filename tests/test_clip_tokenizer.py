"""Tokenizer: identical ids to the openai-clip reference."""
import pytest
import torch

import clip
from clip.simple_tokenizer import SimpleTokenizer
from clip_testutils import reference_clip

CORPUS = [
    "a photo of a cat.",
    "A PHOTO of the   Golden-Retriever, on a sunny day!!!",
    "it's what they've said; we'll see, I'm sure they'd do",
    "café naïve façade — “quoted” … ½ ünïcödé",
    "東京タワー の 写真 and 서울 사진",
    "emoji 🐶🐱 and symbols @#$%^&*()_+={}[]|\\:;<>?/~`",
    "html &amp; entities &lt;b&gt; &amp;amp; &quot;x&quot; &#39;y&#39;",
    "numbers 12345 3.14159 1e-5 0xFF",
    "mojibake: Ã©tÃ© and tabs\tand\nnewlines",
    "<|startoftext|> special <|endoftext|> tokens",
    "",
    "   ",
    "Brussels_Griffon Yorkshire_terrier 747-200",
]
LONG = " ".join(["supercalifragilistic expialidocious"] * 40)


def test_token_ids_identical_to_reference():
    reference = reference_clip()
    ours = clip.tokenize(CORPUS)
    theirs = reference.tokenize(CORPUS)
    assert ours.dtype == torch.long and ours.shape == (len(CORPUS), 77)
    assert torch.equal(ours, theirs.long())


def test_encode_and_decode_identical_to_reference():
    reference = reference_clip()._tokenizer
    ours = SimpleTokenizer()
    assert len(ours.encoder) == 49408
    for text in CORPUS + [LONG]:
        ids = ours.encode(text)
        assert ids == reference.encode(text)
        assert ours.decode(ids) == reference.decode(ids)


def test_truncation_and_too_long_error():
    ours = clip.tokenize([LONG, "short"], truncate=True)
    assert torch.equal(ours, reference_clip().tokenize([LONG, "short"], truncate=True).long())
    assert ours[0, -1].item() == 49407 and ours.argmax(dim=-1)[0].item() == 76
    with pytest.raises(RuntimeError, match="too long for context length 77"):
        clip.tokenize(LONG)


def test_custom_context_length():
    tokens = clip.tokenize("a photo of a dog", context_length=10)
    assert tokens.shape == (1, 10)
    assert tokens[0, 0].item() == 49406 and tokens.argmax(dim=-1).item() == 6
