"""OpenCLIP backbones (clip/openclip.py): tiny randomly initialised OpenCLIP models, saved in each checkpoint
format, build this package's CLIP with OpenCLIP's own features and tokens; names resolve through open_clip's
registry; unsupported families are refused before any download; the image statistics follow the backbone."""
import os

import pytest
import torch

import train
from clip import clip
from clip.model import QuickGELU
from clip.openclip import UnsupportedModel, resolve
from openclip_testutils import FORMATS, TINY_CONFIGS, tiny_checkpoint, write_config

open_clip = pytest.importorskip("open_clip")  # a test dependency (requirements-dev.txt); optional at runtime

TEXTS = ["a photo of a cat.", "X", "an aircraft carrier, at sea", "Ünïcödé  and   spaces!"]


def _features(ours, reference, arch: str) -> tuple[float, float]:
    size = TINY_CONFIGS[arch]["vision_cfg"]["image_size"]
    images = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    tokens = open_clip.get_tokenizer(arch)(TEXTS)
    with torch.no_grad():
        image_gap = (ours.encode_image(images) - reference.encode_image(images)).abs().max().item()
        text_gap = (ours.encode_text(tokens) - reference.encode_text(tokens)).abs().max().item()
    return image_gap, text_gap


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_features_equal_open_clips_in_fp32(arch, fmt, tmp_path):
    config, checkpoint, reference = tiny_checkpoint(str(tmp_path), arch, fmt)
    state_dict = clip.load_state_dict(f"openclip:{config}", path=checkpoint)
    ours = clip.build_model(state_dict, half=False)
    image_gap, text_gap = _features(ours, reference, arch)
    print(f"{arch} {fmt}: largest image feature difference {image_gap:.3g}, text {text_gap:.3g}")
    assert image_gap <= 1e-5 and text_gap <= 1e-5


def test_activation_and_heads_come_from_the_config(tmp_path):
    config, checkpoint, _ = tiny_checkpoint(str(tmp_path), "TinyOC-ViT", "pt")
    gelu = clip.build_model(clip.load_state_dict(f"openclip:{config}", path=checkpoint), half=False)
    assert isinstance(gelu.visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
    assert gelu.visual.transformer.resblocks[0].attn.heads == 2 and gelu.transformer.resblocks[0].attn.heads == 2
    config, checkpoint, _ = tiny_checkpoint(str(tmp_path), "TinyOC-ViT-quickgelu", "pt")
    quick = clip.build_model(clip.load_state_dict(f"openclip:{config}", path=checkpoint), half=False)
    assert isinstance(quick.transformer.resblocks[0].mlp.gelu, QuickGELU)


def test_a_tags_own_activation_wins_over_its_architectures():
    # open_clip lists ViT-B-32's LAION-400M weights under the GELU architecture, but they were trained with
    # QuickGELU, as the tag's config says
    assert open_clip.get_model_config("ViT-B-32").get("quick_gelu", False) is False
    assert resolve("openclip:ViT-B-32/laion400m_e31").quick_gelu is True
    assert resolve("openclip:ViT-B-16/laion2b_s34b_b88k").quick_gelu is False


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_tokens_equal_open_clips(arch, tmp_path):
    config = write_config(str(tmp_path), arch)
    open_clip.add_model_config(config)
    reference = open_clip.get_tokenizer(arch)
    context = resolve(f"openclip:{config}").context_length
    assert torch.equal(clip.tokenize(TEXTS, context_length=context), reference(TEXTS))
    long_text = " ".join(["prompt"] * 100)
    assert torch.equal(clip.tokenize([long_text], context_length=context, truncate=True), reference([long_text]))


@pytest.mark.parametrize("name,family", [("openclip:ViT-B-16-SigLIP/webli", "SigLIP"),
                                         ("openclip:EVA02-B-16/merged2b_s8b_b131k", "timm"),
                                         ("openclip:coca_ViT-B-32/laion2b_s13b_b90k", "CoCa"),
                                         ("openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k", "Hugging Face")])
def test_unsupported_families_are_refused_in_one_line_before_any_download(name, family, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("a refused model must not be downloaded")

    monkeypatch.setattr("clip.hf_hub.hub_file", no_download)
    with pytest.raises(UnsupportedModel) as error:
        clip.load_state_dict(name)
    message = str(error.value)
    assert "\n" not in message and family in message and "supported: OpenCLIP's CLIP models" in message
    assert name not in clip.available_models()


def test_available_models_list_the_supported_openclip_models():
    names = clip.available_models()
    assert "ViT-B/16" in names and "openclip:ViT-B-16/laion2b_s34b_b88k" in names
    assert "openclip:ViT-B-32-quickgelu/metaclip_400m" in names and "openclip:RN50/yfcc15m" in names
    assert not any("SigLIP" in name or "EVA" in name or "coca" in name for name in names)


def test_unknown_names_and_tags_say_what_exists():
    with pytest.raises(ValueError, match="closest: .*'ViT-B-16'"):
        resolve("openclip:ViT-B-61/laion2b_s34b_b88k")
    with pytest.raises(ValueError, match="its tags: .*laion2b_s34b_b88k"):
        resolve("openclip:ViT-B-16/laion3b")
    with pytest.raises(ValueError, match="MODEL.BACKBONE.PATH"):
        clip.load_state_dict("openclip:ViT-B-16")  # an architecture alone has no weights


def test_sizes_in_the_config_are_checked_against_the_weights(tmp_path):
    _, checkpoint, _ = tiny_checkpoint(str(tmp_path), "TinyOC-ViT", "pt")
    other = write_config(str(tmp_path), "TinyOC-RN-quickgelu")
    with pytest.raises(ValueError):
        clip.load_state_dict(f"openclip:{other}", path=checkpoint)


def _setup_cfg(*opts: str):
    args = train.build_parser().parse_args(["--config-file", "configs/trainers/CoOp/tiny.yaml", *opts])
    train.import_plugins([])
    return train.setup_cfg(args)


def test_image_statistics_follow_the_backbone_unless_the_config_is_asked_for(tmp_path):
    stats = {"mean": [0.5, 0.25, 0.125], "std": [0.2, 0.3, 0.4]}
    config = write_config(str(tmp_path), "TinyOC-ViT", preprocess=stats)
    cfg = _setup_cfg("MODEL.BACKBONE.NAME", f"openclip:{config}")
    assert (list(cfg.INPUT.PIXEL_MEAN), list(cfg.INPUT.PIXEL_STD)) == (stats["mean"], stats["std"])
    configured = _setup_cfg("MODEL.BACKBONE.NAME", f"openclip:{config}", "INPUT.PIXEL_STATS", "config")
    plain = _setup_cfg()  # another backbone keeps the config's values exactly
    for cfg in (configured, plain):
        assert list(cfg.INPUT.PIXEL_MEAN) == [0.48145466, 0.4578275, 0.40821073]
    # a tag's own statistics come from open_clip's registry (LAION's ViT-B-16: OpenAI's)
    assert resolve("openclip:ViT-B-16/laion2b_s34b_b88k").mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    with pytest.raises(Exception, match="INPUT.PIXEL_STATS must be one of backbone, config"):
        _setup_cfg("INPUT.PIXEL_STATS", "dataset")
