"""Backbones that compute exactly what a shipped backbone computes, at other widths.

Trainer files from other repositories sometimes write ViT-B/16's widths as constants (the official MaPLe file:
`nn.Linear(ctx_dim, 768)`, deep text prompts of width 512), so they cannot run on the 128-wide demo backbone.
"DemoCLIP-ViT-Tiny-Wide" is the demo backbone at ViT-B/16's widths: text 512, image 768, embedding 512. Every
token vector becomes k copies of itself (k = 4 for text, 6 for image), which LayerNorm leaves unchanged (the
mean and variance of k copies are those of one); every weight matrix reads the first copy and writes all k;
each attention head is a copy of one of the original 64-wide heads; and the output features are 4 copies of
the demo backbone's, so their cosine similarities, hence the logits, are the demo backbone's. On tokens and
images it gives the demo backbone's features up to float rounding; a learned prompt, which need not be k
copies of anything, reaches the features with every dimension (the dimensions the weights do not read act
through LayerNorm's statistics), so trained prompts do not behave as on the demo backbone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .bundled_models import DEMO_MODEL

HEAD_WIDTH = 64  # CLIP's head width: heads = width // 64, so a widened tower keeps each head's shape


@dataclass(frozen=True)
class Widening:
    source: str  # a shipped backbone (clip/bundled_models.py)
    text_width: int
    vision_width: int
    embed_dim: int


WIDENED_MODELS: dict[str, Widening] = {
    DEMO_MODEL + "-Wide": Widening(DEMO_MODEL, text_width=512, vision_width=768, embed_dim=512),
}


def _copies(vector: torch.Tensor, k: int, dim: int = -1) -> torch.Tensor:
    """k copies of `vector` along `dim`: [v, v, ..., v]."""
    return torch.cat([vector] * k, dim=dim)


def _reads_first_copy(weight: torch.Tensor, k_in: int) -> torch.Tensor:
    """A [out, in] matrix for an input made of k_in copies: reads the first copy (zeros elsewhere)."""
    return torch.cat([weight] + [torch.zeros_like(weight)] * (k_in - 1), dim=1)


def _linear(weight: torch.Tensor, k_in: int, k_out: int) -> torch.Tensor:
    """[out, in] -> [k_out * out, k_in * in]: input k_in copies of x, output k_out copies of weight @ x."""
    return _copies(_reads_first_copy(weight, k_in), k_out, dim=0)


def _projection(proj: torch.Tensor, k_in: int, k_out: int) -> torch.Tensor:
    """An [in, out] matrix applied as x @ proj (CLIP's `text_projection`, `visual.proj`), widened like `_linear`."""
    return _linear(proj.t(), k_in, k_out).t()


def _attention_in_proj(weight: torch.Tensor, k: int) -> torch.Tensor:
    """nn.MultiheadAttention's stacked [q; k; v] projection, each part widened on its own."""
    return torch.cat([_linear(part, k, k) for part in weight.chunk(3, dim=0)], dim=0)


def _widen_tower(state_dict: dict[str, torch.Tensor], prefix: str, k: int) -> dict[str, torch.Tensor]:
    """The residual blocks and LayerNorms under `prefix` for a residual stream of k copies."""
    widened = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name.endswith("attn.in_proj_weight"):
            widened[key] = _attention_in_proj(value, k)
        elif name.endswith("attn.in_proj_bias"):
            widened[key] = torch.cat([_copies(part, k) for part in value.chunk(3)])
        elif value.dim() == 2:  # out_proj, c_fc, c_proj: [out, in]
            widened[key] = _linear(value, k, k)
        else:  # the biases of those and LayerNorm weights and biases: one entry per output unit
            widened[key] = _copies(value, k)
    return widened


def widen_vit_state_dict(state_dict: dict[str, torch.Tensor], text_width: int, vision_width: int,
                         embed_dim: int) -> dict[str, torch.Tensor]:
    """A ViT CLIP state dict (OpenAI key names) at these widths, each a whole multiple of the given one (tower
    widths also multiples of the head width); depths, resolution and vocabulary stay."""
    old_text, old_vision = state_dict["ln_final.weight"].shape[0], state_dict["visual.conv1.weight"].shape[0]
    old_embed = state_dict["text_projection"].shape[1]
    for label, old, new, unit in (("text", old_text, text_width, HEAD_WIDTH),
                                  ("image", old_vision, vision_width, HEAD_WIDTH),
                                  ("embedding", old_embed, embed_dim, 1)):
        if new % old or new % unit or old % unit:
            heads = f", both multiples of the head width {unit}" if unit > 1 else ""
            raise ValueError(f"Cannot widen the {label} width from {old} to {new}: the new width must be a whole "
                             f"multiple of the old one{heads}")
    kt, kv, ke = text_width // old_text, vision_width // old_vision, embed_dim // old_embed
    widened = {**_widen_tower(state_dict, "transformer.", kt), **_widen_tower(state_dict, "visual.transformer.", kv)}
    widened.update({
        "token_embedding.weight": _copies(state_dict["token_embedding.weight"], kt),
        "positional_embedding": _copies(state_dict["positional_embedding"], kt),
        "ln_final.weight": _copies(state_dict["ln_final.weight"], kt),
        "ln_final.bias": _copies(state_dict["ln_final.bias"], kt),
        "text_projection": _projection(state_dict["text_projection"], kt, ke),
        "visual.proj": _projection(state_dict["visual.proj"], kv, ke),
        "visual.conv1.weight": _copies(state_dict["visual.conv1.weight"], kv, dim=0),  # input: pixels
        "visual.class_embedding": _copies(state_dict["visual.class_embedding"], kv),
        "visual.positional_embedding": _copies(state_dict["visual.positional_embedding"], kv),
        **{f"visual.{ln}.{p}": _copies(state_dict[f"visual.{ln}.{p}"], kv)
           for ln in ("ln_pre", "ln_post") for p in ("weight", "bias")},
    })
    for key, value in state_dict.items():  # logit_scale, and anything else width-free
        widened.setdefault(key, value)
    return {key: value.contiguous() for key, value in widened.items()}


def widened_state_dict(name: str) -> dict[str, torch.Tensor]:
    """OpenAI-format state dict of the widened backbone `name`, from its verified shipped source."""
    if name not in WIDENED_MODELS:
        raise ValueError(f"Unknown widened backbone '{name}'; valid names: {list(WIDENED_MODELS)}")
    from .clip import load_state_dict  # clip.py imports this module

    widening = WIDENED_MODELS[name]
    source = load_state_dict(widening.source)  # the shipped file, SHA-256 verified
    return widen_vit_state_dict(source, widening.text_width, widening.vision_width, widening.embed_dim)
