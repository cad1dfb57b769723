"""OpenCLIP models of OpenAI's architecture (LAION, DataComp, MetaCLIP, DFN weights...) as this package's CLIP.

Names: "openclip:<arch>/<pretrained tag>" (e.g. "openclip:ViT-B-16/laion2b_s34b_b88k"), resolved through the
open_clip_torch package's own registry (its architecture and pretrained configs); "openclip:<arch>" or
"openclip:<path/to/config.json>" (an architecture config, bare or as the "model_cfg" of an
open_clip_config.json) name an architecture whose weights come from MODEL.BACKBONE.PATH; a tagged name with
a PATH reads that local copy of the tagged weights. open_clip_torch is imported only when such a name is used.

OpenCLIP's CLIP class keeps OpenAI's state-dict key names, so its weights build this package's model as
they are; what the keys do not say comes from the configs: the activation (QuickGELU or GELU; a tag's own
`quick_gelu` wins over its architecture's, since it says how those weights were trained), the attention
heads, the image mean and std (the tag's, else open_clip's defaults), and the tokenizer (OpenAI's BPE with
the config's context length). Only that family is accepted: a config using any other option of open_clip
(timm trunks, Hugging Face text towers, SigLIP, CoCa, EVA, CLIPA pooling, ...) is refused before any download.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import os
from dataclasses import dataclass

import torch

from .model import ARCHITECTURE_KEY, infer_config

PREFIX = "openclip:"
# Options that only size the towers (the sizes are read off the weights and checked) or do not change the
# features (output_tokens: extra outputs; pad_id / eos_id: used only by pooling types refused here).
_SIZE_OPTIONS = {
    "vision_cfg": {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "output_tokens"},
    "text_cfg": {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "output_tokens",
                 "pad_id", "eos_id"},
}
_TOP_OPTIONS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale"}
# Why a family is outside the supported one, by the option that gives it away.
_FAMILIES = {
    "timm_model_name": "a timm image trunk", "hf_model_name": "a Hugging Face text tower",
    "hf_tokenizer_name": "a Hugging Face tokenizer", "custom_text": "a custom text tower",
    "init_logit_bias": "SigLIP's sigmoid head", "multimodal_cfg": "CoCa's text decoder",
}
SUPPORTED = ("supported: OpenCLIP's CLIP models of OpenAI's architecture (a ViT or ModifiedResNet image tower, "
             "OpenAI's text transformer and BPE tokenizer), e.g. openclip:ViT-B-16/laion2b_s34b_b88k, "
             "openclip:ViT-B-32-quickgelu/metaclip_400m, openclip:RN50/yfcc15m; clip.available_models() lists them")


class UnsupportedModel(ValueError):
    """An OpenCLIP model outside the CLIP family of OpenAI's architecture."""


def open_clip_module():
    try:
        import open_clip
    except ImportError as error:
        raise RuntimeError("OpenCLIP backbones (MODEL.BACKBONE.NAME 'openclip:...') need the optional package "
                           "open_clip_torch (pip install open_clip_torch)") from error
    return open_clip


def is_openclip_name(name: str) -> bool:
    return name.startswith(PREFIX)


@dataclass(frozen=True)
class OpenCLIPModel:
    """A resolved OpenCLIP name: its configs and what they say about the model."""
    name: str
    arch: str  # architecture name, or the config file's path
    tag: str  # pretrained tag ("" when the weights come from MODEL.BACKBONE.PATH only)
    model_cfg: dict
    pretrained_cfg: dict  # the tag's config, or the config file's "preprocess_cfg"
    quick_gelu: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def context_length(self) -> int:
        return int(self.model_cfg["text_cfg"].get("context_length", 77))


def _read_config_file(path: str) -> tuple[dict, dict]:
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise ValueError(f"OpenCLIP architecture config {path} does not exist")
    with open(path, encoding="utf-8") as handle:
        content = json.load(handle)
    model_cfg = content.get("model_cfg", content)
    if not all(key in model_cfg for key in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ValueError(f"{path} is not an OpenCLIP architecture config (needs embed_dim, vision_cfg, text_cfg)")
    return model_cfg, content.get("preprocess_cfg", {})


def _closest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=5)
    return f"closest: {close}" if close else f"{len(choices)} known"


def _registry_configs(open_clip, arch: str, tag: str) -> tuple[dict, dict]:
    from open_clip.factory import get_model_config

    model_cfg = get_model_config(arch)
    if model_cfg is None:
        raise ValueError(f"Unknown OpenCLIP architecture {arch!r} ({_closest(arch, open_clip.list_models())}; "
                         "open_clip.list_models() lists them), or give a path to a config .json")
    pretrained_cfg = {}
    if tag:
        pretrained_cfg = open_clip.get_pretrained_cfg(arch, tag)
        if not pretrained_cfg:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise ValueError(f"OpenCLIP architecture {arch} has no pretrained tag {tag!r}; its tags: {tags}")
    return model_cfg, dict(pretrained_cfg)


def _defaults(open_clip) -> dict[str, dict]:
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    top = {name: parameter.default for name, parameter in
           inspect.signature(open_clip.model.CLIP.__init__).parameters.items()
           if parameter.default is not inspect.Parameter.empty}
    return {"": top,
            "vision_cfg": {field.name: field.default for field in dataclasses.fields(CLIPVisionCfg)},
            "text_cfg": {field.name: field.default for field in dataclasses.fields(CLIPTextCfg)}}


def unsupported_reason(model_cfg: dict, open_clip) -> str:
    """'' when `model_cfg` is of the supported family, else the option that puts it outside (with its family)."""
    defaults = _defaults(open_clip)
    sections = [(part, model_cfg.get(part, {}), _SIZE_OPTIONS[part]) for part in ("vision_cfg", "text_cfg")]
    sections += [("", {k: v for k, v in model_cfg.items() if k not in ("vision_cfg", "text_cfg")}, _TOP_OPTIONS)]
    # options naming a family first (a timm trunk, CoCa's decoder...), then any other departure
    ordered = sorted(((key not in _FAMILIES, part, key, value, free) for part, options, free in sections
                      for key, value in options.items()), key=lambda entry: entry[0])
    for _, part, key, value, free in ordered:
        if key in free or (key in defaults[part] and value == defaults[part][key]):
            continue
        where = f"{part}.{key}" if part else key
        family = _FAMILIES.get(key, "not part of OpenAI's architecture")
        shown = "{...}" if isinstance(value, dict) and len(repr(value)) > 40 else repr(value)
        return f"{where} = {shown}: {family}"
    image_size = model_cfg["vision_cfg"].get("image_size", 224)
    if isinstance(image_size, (list, tuple)) and len(set(image_size)) != 1:
        return f"vision_cfg.image_size = {image_size!r}: non-square inputs"
    return ""


def resolve(name: str) -> OpenCLIPModel:
    """The OpenCLIP model `name` ("openclip:...") names, from open_clip's registry or a config file; refuses a
    model outside the supported family (UnsupportedModel, one line) before anything is downloaded."""
    open_clip = open_clip_module()
    spec = name[len(PREFIX):]
    if spec.endswith(".json"):
        arch, tag = spec, ""
        model_cfg, pretrained_cfg = _read_config_file(spec)
    else:
        arch, _, tag = spec.partition("/")
        model_cfg, pretrained_cfg = _registry_configs(open_clip, arch, tag)
    reason = unsupported_reason(model_cfg, open_clip)
    if reason:
        raise UnsupportedModel(f"{name} is not supported ({reason}); {SUPPORTED}")
    from open_clip.transform import PreprocessCfg

    preprocess = dataclasses.asdict(PreprocessCfg())  # open_clip's defaults, overridden by the tag's
    preprocess.update({key: pretrained_cfg[key] for key in ("mean", "std") if key in pretrained_cfg})
    quick_gelu = bool(pretrained_cfg.get("quick_gelu", model_cfg.get("quick_gelu", False)))
    return OpenCLIPModel(name, arch, tag, model_cfg, pretrained_cfg, quick_gelu,
                         tuple(float(v) for v in preprocess["mean"]), tuple(float(v) for v in preprocess["std"]))


def _heads(model: OpenCLIPModel) -> dict[str, int]:
    vision, text = model.model_cfg["vision_cfg"], model.model_cfg["text_cfg"]
    head_width = int(vision.get("head_width", 64))
    width = int(vision.get("width", 768))
    resnet = isinstance(vision.get("layers", 12), (list, tuple))
    return {"vision_heads": (width * 32 if resnet else width) // head_width,
            "transformer_heads": int(text.get("heads", 8))}


def to_clip_state_dict(state_dict: dict[str, torch.Tensor], model: OpenCLIPModel,
                       source: str) -> dict[str, object]:
    """OpenCLIP weights as this package's state dict: the same tensors, plus the `ARCHITECTURE_KEY` entry that
    carries what the weights do not show; the configs' sizes are checked against the weights'."""
    converted = dict(state_dict)
    converted[ARCHITECTURE_KEY] = {"activation": "quick_gelu" if model.quick_gelu else "gelu", **_heads(model)}
    config = infer_config(converted, source)
    vision, text = model.model_cfg["vision_cfg"], model.model_cfg["text_cfg"]
    image_size = vision.get("image_size", 224)
    image_size = image_size[0] if isinstance(image_size, (list, tuple)) else image_size
    stated = {"image size": (int(image_size), config.image_resolution),
              "context length": (model.context_length, config.context_length),
              "embedding width": (int(model.model_cfg["embed_dim"]), config.embed_dim),
              "text width": (int(text.get("width", 512)), config.transformer_width)}
    mismatched = {what: pair for what, pair in stated.items() if pair[0] != pair[1]}
    if mismatched:
        raise ValueError(f"{source} does not fit the OpenCLIP config of {model.name}: "
                         + ", ".join(f"{what} {cfg} in the config, {found} in the weights"
                                     for what, (cfg, found) in mismatched.items()))
    return converted


def supported_names() -> list[str]:
    """Every "openclip:<arch>/<tag>" of open_clip's registry in the supported family ([] without open_clip)."""
    try:
        open_clip = open_clip_module()
    except RuntimeError:
        return []
    from open_clip.factory import get_model_config

    names = []
    for arch, tag in open_clip.list_pretrained():
        model_cfg = get_model_config(arch)
        if model_cfg is not None and not unsupported_reason(model_cfg, open_clip):
            names.append(f"{PREFIX}{arch}/{tag}")
    return names


def load_openclip_state_dict(name: str, path: str = "", download_root: str | None = None) -> dict[str, object]:
    """The state dict (with its `ARCHITECTURE_KEY` entry) of the OpenCLIP model `name`: read from `path` when
    given, else the tag's weights from the Hub cache under `download_root` (downloaded once, verified)."""
    from .checkpoints import read_checkpoint
    from .download import default_cache_dir
    from .hf_hub import hub_file

    model = resolve(name)
    if not path:
        if not model.tag:
            raise ValueError(f"{name} names an architecture without weights: set MODEL.BACKBONE.PATH to its "
                             f"checkpoint file, or name a pretrained tag (openclip:{model.arch}/<tag>)")
        if not model.pretrained_cfg.get("hf_hub"):
            raise ValueError(f"{name}: open_clip lists no Hugging Face Hub file for this tag; download "
                             f"{model.pretrained_cfg.get('url', 'its weights')} and set MODEL.BACKBONE.PATH to it")
        root = os.path.expanduser(download_root) if download_root else default_cache_dir()
        path = hub_file(model.pretrained_cfg["hf_hub"], root)
    return to_clip_state_dict(read_checkpoint(path), model, path)
