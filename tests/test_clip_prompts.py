"""The one prompt mechanism: where text/vision prompts enter, deep replacement per layer, truncation."""
import pytest
import torch

import clip
from clip import model as clip_model
from clip_testutils import perturbed_state_dict

TEXTS = ["a photo of a cat.", "a photo of a golden retriever, a type of dog.", "x"]


@pytest.fixture(scope="module")
def vit():
    # Three text/vision layers so a deep prompt list can leave the last layer unprompted.
    state_dict = perturbed_state_dict("RandomInit-ViT-Tiny")
    for tower in ("transformer", "visual.transformer"):
        prefix = f"{tower}.resblocks."
        state_dict.update({k.replace(prefix + "1.", prefix + "2."): v.clone()
                           for k, v in state_dict.items() if k.startswith(prefix + "1.")})
    model = clip.build_model(state_dict).float()
    assert model.transformer.layers == 3 and model.visual.transformer.layers == 3
    return model


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _image(model, batch=2):
    r = model.visual.input_resolution
    return torch.randn(batch, 3, r, r, generator=_gen(0))


class _BlockRecorder:
    """Records the input and output of every residual block of a transformer."""

    def __init__(self, transformer):
        self.inputs, self.outputs, self.handles = [], [], []
        for block in transformer.resblocks:
            self.handles.append(block.register_forward_pre_hook(lambda m, args: self.inputs.append(args[0])))
            self.handles.append(block.register_forward_hook(lambda m, args, out: self.outputs.append(out)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def test_no_prompts_equal_plain_clip(vit):
    tokens = clip.tokenize(TEXTS)
    image = _image(vit)
    with torch.no_grad():
        plain_text = vit.encode_text(tokens)
        plain_image = vit.encode_image(image)
        embeddings = vit.token_embedding(tokens)
        torch.testing.assert_close(vit.encode_text_embeddings(embeddings, tokens.argmax(-1)), plain_text)
        torch.testing.assert_close(vit.encode_text_embeddings(embeddings, tokens.argmax(-1), []), plain_text)
        torch.testing.assert_close(vit.encode_image(image, None, []), plain_image)
        empty = torch.zeros(0, vit.visual.width)
        torch.testing.assert_close(vit.encode_image(image, empty, [empty, empty]), plain_image)
        torch.testing.assert_close(vit.visual(image), plain_image)


def test_text_deep_prompts_replace_positions_after_sos(vit):
    tokens = clip.tokenize(TEXTS)
    n, width = 2, vit.transformer.width
    deep = [torch.randn(n, width, generator=_gen(1)),                 # shared by all classes
            torch.randn(len(TEXTS), n, width, generator=_gen(2))]     # one per class
    embeddings = vit.token_embedding(tokens)
    with torch.no_grad(), _BlockRecorder(vit.transformer) as rec:
        vit.encode_text_embeddings(embeddings, tokens.argmax(-1), deep, truncate=False, share_prefix=False)
    # The blocks see the rows packed, one after the other: [rows * 77, D] here (no truncation, no shared prefix).
    def rows(packed):
        return packed.view(len(TEXTS), -1, width)

    # Layer 0 sees the embeddings plus positional embedding, untouched.
    torch.testing.assert_close(rows(rec.inputs[0]), embeddings + vit.positional_embedding)
    for layer in (1, 2):
        before, after = rows(rec.outputs[layer - 1]), rows(rec.inputs[layer])
        expected = before.clone()
        expected[:, 1:1 + n] = deep[layer - 1]  # positions 1..n, right after SOS
        assert torch.equal(after, expected)
    # With one deep prompt, layer 2 gets layer 1's output unchanged.
    with torch.no_grad(), _BlockRecorder(vit.transformer) as rec:
        vit.encode_text_embeddings(embeddings, tokens.argmax(-1), deep[:1], truncate=False, share_prefix=False)
    assert torch.equal(rec.inputs[2], rec.outputs[1])


def test_vision_prompts_are_appended_and_deep_prompts_replace_the_last_tokens(vit):
    image = _image(vit)
    n, width = 3, vit.visual.width
    n_patches = vit.visual.positional_embedding.shape[0]
    shallow = torch.randn(n, width, generator=_gen(3))
    deep = [torch.randn(2, n, width, generator=_gen(4))]  # per image
    with torch.no_grad(), _BlockRecorder(vit.visual.transformer) as rec:
        prompted = vit.encode_image(image, shallow, deep)
        plain_tokens = vit.visual.ln_pre(
            torch.cat([vit.visual.class_embedding.expand(2, 1, -1),
                       vit.visual.conv1(image).flatten(2).transpose(1, 2)], dim=1) + vit.visual.positional_embedding)
    first = rec.inputs[0]
    assert first.shape[1] == n_patches + n
    torch.testing.assert_close(first[:, :n_patches], plain_tokens)  # ln_pre is per token
    torch.testing.assert_close(first[:, n_patches:], vit.visual.ln_pre(shallow).expand(2, -1, -1))
    expected = rec.outputs[0].clone()
    expected[:, -n:] = deep[0]
    assert torch.equal(rec.inputs[1], expected)
    assert torch.equal(rec.inputs[2], rec.outputs[1])
    assert not torch.allclose(prompted, vit.encode_image(image))


def test_prompts_receive_gradients_and_are_cast_to_activation_dtype(vit):
    tokens = clip.tokenize(TEXTS)
    ctx = torch.randn(2, vit.transformer.width, dtype=torch.float64, requires_grad=True)
    vis = torch.randn(2, vit.visual.width, requires_grad=True)
    embeddings = vit.token_embedding(tokens).detach()
    text = vit.encode_text_embeddings(embeddings, tokens.argmax(-1), [ctx])
    image = vit.encode_image(_image(vit), vis, [vis * 2])
    (text.sum() + image.sum()).backward()
    assert text.dtype == torch.float32 and ctx.grad is not None and vis.grad is not None
    assert ctx.grad.abs().sum() > 0 and vis.grad.abs().sum() > 0


@pytest.mark.parametrize("fused", [True, False])
def test_truncation_gives_the_full_context_features(vit, fused):
    tokens = clip.tokenize(TEXTS)
    deep = [torch.randn(4, vit.transformer.width, generator=_gen(5))] * 2
    embeddings = vit.token_embedding(tokens)
    with torch.no_grad(), clip_model.fused_attention(fused), clip_model.shared_prefix(False):
        for prompts in ([], deep):
            full = vit.encode_text_embeddings(embeddings, tokens.argmax(-1), prompts, truncate=False)
            short = vit.encode_text_embeddings(embeddings, tokens.argmax(-1), prompts, truncate=True)
            torch.testing.assert_close(short, full, atol=1e-5, rtol=1e-5)
        with clip_model.text_truncation(False), _BlockRecorder(vit.transformer) as rec:
            vit.encode_text(tokens)
        assert rec.inputs[0].shape[0] == len(TEXTS) * 77
        with _BlockRecorder(vit.transformer) as rec:
            vit.encode_text(tokens)
        assert rec.inputs[0].shape[0] == int((tokens.argmax(-1) + 1).sum())  # each row up to its own EOT


def test_prompt_errors_are_actionable(vit):
    image = _image(vit)
    width = vit.visual.width
    with pytest.raises(ValueError, match="at most 2"):
        vit.encode_image(image, torch.zeros(1, width), [torch.zeros(1, width)] * 3)
    with pytest.raises(ValueError, match="counts must match"):
        vit.encode_image(image, None, [torch.zeros(1, width)])
    with pytest.raises(ValueError, match=rf"expected \[n, {width}\]"):
        vit.encode_image(image, torch.zeros(1, width + 1))
    resnet = clip.build_model(perturbed_state_dict("RandomInit-RN-Tiny")).float()
    with pytest.raises(ValueError, match="needs a ViT backbone"):
        resnet.encode_image(torch.zeros(1, 3, 64, 64), torch.zeros(1, 8))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_prompts_in_low_precision_models(dtype):
    model = clip.build_model(perturbed_state_dict("RandomInit-ViT-Tiny")).to(dtype)
    tokens = clip.tokenize(TEXTS)
    fp32_prompt = torch.randn(2, model.transformer.width)
    text = model.encode_text_embeddings(model.token_embedding(tokens), tokens.argmax(-1), [fp32_prompt])
    image = model.encode_image(torch.randn(1, 3, 32, 32), torch.randn(2, model.visual.width),
                               [torch.randn(2, model.visual.width)])
    assert text.dtype == dtype and image.dtype == dtype
    assert torch.isfinite(text).all() and torch.isfinite(image).all()
