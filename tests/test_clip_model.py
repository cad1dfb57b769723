"""CLIP model parity with the openai-clip reference package, weight conversion and precisions."""
import pytest
import torch

import clip
from clip import model as clip_model
from clip_testutils import perturbed_state_dict, reference_clip

TEXTS = ["a photo of a cat.", "a blurry photo of a dog, on grass!", "x", "an origami airplane"]


def _image(resolution: int, batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))


def _pair(name: str):
    state_dict = perturbed_state_dict(name)
    ours = clip.build_model(state_dict).float()
    reference = reference_clip().build_model(dict(state_dict)).float()
    return ours, reference


@pytest.fixture(scope="module", params=["RandomInit-ViT-Tiny", "RandomInit-RN-Tiny"])
def models(request):
    return _pair(request.param)


def test_encoders_and_logits_match_reference(models):
    ours, reference = models
    image = _image(ours.visual.input_resolution)
    tokens = clip.tokenize(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_image(image), reference.encode_image(image), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.encode_text(tokens), reference.encode_text(tokens), atol=1e-5, rtol=1e-5)
        for mine, theirs in zip(ours(image, tokens), reference(image, tokens)):
            torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


def test_sequence_first_text_transformer_matches_reference(models):
    """Official CoOp-style TextEncoders call model.transformer(x) on [L, N, D]."""
    ours, reference = models
    x = torch.randn(77, 2, ours.transformer.width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours.transformer(x), reference.transformer(x), atol=1e-5, rtol=1e-5)


def test_fused_and_explicit_attention_agree(models):
    ours, _ = models
    image = _image(ours.visual.input_resolution)
    tokens = clip.tokenize(TEXTS)
    with torch.no_grad():
        fused = ours.encode_image(image), ours.encode_text(tokens, truncate=False)
        with clip_model.fused_attention(False):
            assert not clip_model.fused_attention_enabled()
            explicit = ours.encode_image(image), ours.encode_text(tokens, truncate=False)
    assert clip_model.fused_attention_enabled()
    for a, b in zip(fused, explicit):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_weight_dtypes_follow_openai_convert_weights():
    model = clip.build_model(perturbed_state_dict("RandomInit-ViT-Tiny"))
    half = {"visual.conv1.weight", "visual.proj", "text_projection",
            "transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.0.attn.in_proj_bias",
            "transformer.resblocks.0.attn.out_proj.weight", "transformer.resblocks.1.mlp.c_fc.bias",
            "visual.transformer.resblocks.1.mlp.c_proj.weight"}
    single = {"visual.class_embedding", "visual.positional_embedding", "positional_embedding",
              "token_embedding.weight", "ln_final.weight", "visual.ln_pre.bias", "logit_scale",
              "transformer.resblocks.0.ln_1.weight"}
    params = dict(model.named_parameters())
    assert {k for k in half if params[k].dtype != torch.float16} == set()
    assert {k for k in single if params[k].dtype != torch.float32} == set()
    assert model.dtype == torch.float16 and not model.training
    # The reference, built from the same dict, has the same parameter names and dtypes.
    reference = reference_clip().build_model(dict(perturbed_state_dict("RandomInit-ViT-Tiny")))
    assert {k: v.dtype for k, v in reference.state_dict().items()} == \
           {k: v.dtype for k, v in model.state_dict().items()}


def test_resnet_batchnorm_and_fp32_state_dict_load():
    state_dict = {k: v.float() for k, v in perturbed_state_dict("RandomInit-RN-Tiny").items()}
    model = clip.build_model(state_dict)
    assert model.visual.layer1[0].bn1.running_var.dtype == torch.float32
    assert model.visual.attnpool.q_proj.weight.dtype == torch.float16


def test_attributes_used_by_trainers():
    model = clip.build_model(perturbed_state_dict("RandomInit-ViT-Tiny"))
    assert (model.context_length, model.vocab_size) == (77, 49408)
    assert (model.visual.input_resolution, model.visual.output_dim, model.visual.width) == (32, 32, 64)
    assert (model.transformer.width, model.transformer.layers) == (64, 2)
    assert model.visual.transformer.layers == 2
    assert model.visual.conv1.weight.shape[-1] == 8


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_close_to_fp32(dtype):
    state_dict = perturbed_state_dict("RandomInit-ViT-Tiny")
    reference = clip.build_model(state_dict).float()
    low = clip.build_model(state_dict).to(dtype)
    image, tokens = _image(32), clip.tokenize(TEXTS)
    with torch.no_grad():
        for encode in ("encode_image", "encode_text"):
            a = getattr(low, encode)(image if encode == "encode_image" else tokens)
            b = getattr(reference, encode)(image if encode == "encode_image" else tokens)
            assert a.dtype == dtype
            torch.testing.assert_close(a.float(), b, atol=0.05, rtol=0.05)


def test_fp16_model_matches_reference_fp16():
    """OpenAI's default precision: fp16 weights, LayerNorm in fp32."""
    state_dict = perturbed_state_dict("RandomInit-ViT-Tiny")
    ours, reference = clip.build_model(state_dict), reference_clip().build_model(dict(state_dict))
    image, tokens = _image(32), clip.tokenize(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode_image(image), reference.encode_image(image), atol=1e-2, rtol=1e-2)
        torch.testing.assert_close(ours.encode_text(tokens), reference.encode_text(tokens), atol=1e-2, rtol=1e-2)


def test_autocast_bf16_runs_and_stays_close():
    model = clip.build_model(perturbed_state_dict("RandomInit-ViT-Tiny")).float()
    image, tokens = _image(32), clip.tokenize(TEXTS)
    with torch.no_grad():
        full = model(image, tokens)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(image, tokens)[0]
    torch.testing.assert_close(mixed.float(), full, atol=0.2, rtol=0.05)


def test_not_a_clip_state_dict_is_rejected():
    with pytest.raises(ValueError, match="not a CLIP state dict.*token_embedding.weight"):
        clip.build_model({"visual.proj": torch.zeros(2, 2)})
    state_dict = perturbed_state_dict("RandomInit-ViT-Tiny")
    state_dict["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="extra.weight"):
        clip.build_model(state_dict)
