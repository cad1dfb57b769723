"""`clip.build_model(state_dict, design_details)`: the official MaPLe fork's designs as an adapter onto the
one prompt mechanism, checked against the official prompted computation on the reference openai-clip model
(three-layer towers, so the layer bookkeeping shows)."""
import pytest
import torch
from torch import nn

from clip import clip
from clip.random_models import random_state_dict
from clip_testutils import reference_clip, three_layer_state_dict
from official_forward_testutils import official_image, official_text

PLAIN = {"trainer": "CoOp", "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0}
# text prompts in layers 0..2 (2 tokens), vision prompts in layers 0..1 (3 tokens)
IVLP = {"trainer": "IVLP", "vision_depth": 2, "language_depth": 3, "vision_ctx": 3, "language_ctx": 2}


@pytest.fixture(scope="module")
def state_dict():
    return three_layer_state_dict()


@pytest.fixture(scope="module")
def reference(state_dict):
    return reference_clip().build_model(dict(state_dict)).float().eval()


def _image():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _prompted_text_input(model, tokenized, ctx):
    """What an official text encoder hands the transformer: [SOS][ctx][rest] + positional embedding, [L, N, D]."""
    embedding = model.token_embedding(tokenized)
    x = torch.cat([embedding[:, :1], ctx.expand(len(tokenized), -1, -1), embedding[:, 1 + ctx.shape[0]:]], dim=1)
    return (x + model.positional_embedding).permute(1, 0, 2)


def _text_features(model, x, tokenized):
    x = model.ln_final(x.permute(1, 0, 2))
    return x[torch.arange(x.shape[0]), tokenized.argmax(dim=-1)] @ model.text_projection


def test_ivlp_design_owns_prompts_under_the_official_names_drawn_like_our_trainers(state_dict):
    torch.manual_seed(0)
    model = clip.build_model(dict(state_dict), IVLP)
    after_build = torch.rand(1)
    owned = {name: p for name, p in model.named_parameters() if "VPT" in name}
    text_width, vision_width = model.transformer.width, model.visual.width
    assert {name: tuple(p.shape) for name, p in owned.items()} == {
        "transformer.resblocks.1.VPT_shallow": (2, text_width),
        "transformer.resblocks.2.VPT_shallow": (2, text_width),
        "visual.VPT": (3, vision_width),
        "visual.transformer.resblocks.1.VPT_shallow": (3, vision_width),
    }
    assert model.dtype == torch.float16 and all(p.dtype == torch.float32 for p in owned.values())
    # the draws of trainers/independentVL.py: text deep prompts, the vision prompt, the vision deep prompts
    torch.manual_seed(0)
    expected = [nn.init.normal_(torch.empty(n, width), std=0.02)
                for n, width in ((2, text_width), (2, text_width), (3, vision_width), (3, vision_width))]
    order = ["transformer.resblocks.1.VPT_shallow", "transformer.resblocks.2.VPT_shallow", "visual.VPT",
             "visual.transformer.resblocks.1.VPT_shallow"]
    for name, values in zip(order, expected):
        assert torch.equal(owned[name].detach(), values), name
    assert torch.equal(torch.rand(1), after_build)  # nothing else was drawn


def test_ivlp_design_encoders_use_the_owned_prompts_like_the_official_blocks(state_dict, reference):
    model = clip.build_model(dict(state_dict), IVLP).float()
    visual, text = model.visual, model.transformer.resblocks
    image = _image()
    with torch.no_grad():
        expected = official_image(reference, image, visual.VPT, [visual.transformer.resblocks[1].VPT_shallow])
        torch.testing.assert_close(visual(image), expected)

        tokenized = clip.tokenize(["a photo of a cat.", "a photo of a striped dog."])
        ctx = torch.randn(2, model.transformer.width, generator=torch.Generator().manual_seed(4))
        deep = [text[1].VPT_shallow, text[2].VPT_shallow]
        features = _text_features(model, model.transformer(_prompted_text_input(model, tokenized, ctx)), tokenized)
        torch.testing.assert_close(features, official_text(reference, tokenized, ctx, deep, 2))
        # encode_text (no learned context) goes through the same deep prompts
        words = model.token_embedding(tokenized)[0, 1:3]  # "a photo", the first words of both prompts
        torch.testing.assert_close(model.encode_text(tokenized), official_text(reference, tokenized, words, deep, 2))


def test_maple_design_takes_the_list_call_and_the_vision_prompts_as_arguments(state_dict, reference):
    design = dict(PLAIN, trainer="MaPLe", maple_length=2)
    model = clip.build_model(dict(state_dict), design).float()
    assert not [name for name, _ in model.named_parameters() if "VPT" in name]
    generator = torch.Generator().manual_seed(5)
    ctx, shared = torch.randn(2, model.transformer.width, generator=generator), torch.randn(2, model.visual.width)
    deep_text = [torch.randn(2, model.transformer.width, generator=generator) for _ in range(3)]
    deep_vision = [torch.randn(2, model.visual.width, generator=generator) for _ in range(2)]
    tokenized = clip.tokenize(["a photo of a cat.", "a photo of a striped dog."])
    with torch.no_grad():
        x, prompts, counter = model.transformer([_prompted_text_input(model, tokenized, ctx), deep_text, 0])
        # three layers take two deep prompts (layers 1 and 2); the third is left, as in the official blocks
        assert prompts is deep_text and counter == 2
        torch.testing.assert_close(_text_features(model, x, tokenized),
                                   official_text(reference, tokenized, ctx, deep_text[:2], 2))
        torch.testing.assert_close(model.visual(_image(), shared, deep_vision),
                                   official_image(reference, _image(), shared, deep_vision))


@pytest.mark.parametrize("design", [
    PLAIN, dict(PLAIN, trainer="CoCoOp"), dict(PLAIN, trainer="MaPLe", maple_length=2),
    dict(PLAIN, trainer="IVLP"),  # PromptSRC's frozen zero-shot CLIP
    None,
], ids=["CoOp", "CoCoOp", "MaPLe", "IVLP-depth-0", "none"])
def test_designs_without_owned_prompts_are_plain_clip_and_draw_nothing(design):
    state_dict = random_state_dict("RandomInit-ViT-Tiny")
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    model = clip.build_model(dict(state_dict), design)
    assert torch.equal(torch.rand(3), expected)
    assert set(model.state_dict()) == set(state_dict)
    image = _image().half()
    torch.testing.assert_close(model.visual(image), clip.build_model(dict(state_dict)).visual(image))


def test_owned_prompts_work_in_fp16(state_dict):
    torch.manual_seed(0)
    half = clip.build_model(dict(state_dict), IVLP)
    full = clip.build_model(dict(state_dict), IVLP).float()
    full.load_state_dict(half.state_dict())
    features = half.visual(_image().half())
    assert features.dtype == torch.float16
    torch.testing.assert_close(features.float(), full.visual(_image()), rtol=0, atol=2e-2)


@pytest.mark.parametrize("design, message", [
    (dict(IVLP, trainer="DeepVPT"),
     r"design_details\['trainer'\] is 'DeepVPT'.*'CoOp', 'CoCoOp', 'MaPLe', 'IVLP', 'VPT'"),
    (dict(IVLP, vision_depth=4), r"design_details\['vision_depth'\] is 4 but the vision transformer .* has 3 layers"),
    (dict(IVLP, language_ctx=0), r"'language_depth'\] is 3 but 'language_ctx' is 0"),
    (dict(IVLP, vision_ctx=-1), r"design_details\['vision_ctx'\] must be a non-negative int; got -1"),
    (dict(IVLP, vision_ctx="4"), r"design_details\['vision_ctx'\] must be a non-negative int; got '4'"),
    (["IVLP"], r"design_details must be a dict"),
])
def test_bad_design_details_are_refused_naming_the_key(state_dict, design, message):
    with pytest.raises(ValueError, match=message):
        clip.build_model(dict(state_dict), design)


def test_vision_prompt_designs_refuse_a_resnet():
    state_dict = random_state_dict("RandomInit-RN-Tiny")
    with pytest.raises(ValueError, match="IVLP vision prompts, which need a ViT backbone.*ModifiedResNet"):
        clip.build_model(dict(state_dict), dict(IVLP, vision_depth=1, language_depth=1))
    # text-only IVLP (the language-only ablation) is fine on a ResNet
    design = dict(IVLP, vision_depth=0, vision_ctx=0, language_depth=1)
    assert not any("VPT" in key for key in clip.build_model(dict(state_dict), design).state_dict())
