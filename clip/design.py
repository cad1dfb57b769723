"""The `design_details` argument of the official MaPLe fork's `clip.build_model`, as a thin adapter onto this
package's one prompt mechanism (clip/model.py).

Trainer files of the MaPLe family (the official MaPLe, IVLP and VPT files, PromptSRC and the papers built on
their code) pass a dict such as {"trainer": "IVLP", "vision_depth": 9, "language_depth": 9, "vision_ctx": 4,
"language_ctx": 4} and then drive the model the way that fork's CLIP is driven:
- "CoOp" / "CoCoOp": a plain CLIP.
- "MaPLe": the trainer file owns every prompt. It calls the text transformer with the list [x, deep_prompts,
  counter] and the vision encoder as `visual(image, shared_ctx, deep_prompts)`; `Transformer.forward` and
  `VisionTransformer.forward` take exactly these, so nothing is added to the model.
- "IVLP" / "VPT": the model owns the prompts, under the fork's parameter names: `visual.VPT`
  [vision_ctx, vision width] (appended after the patch tokens), `visual.transformer.resblocks.<k>.VPT_shallow`
  and `transformer.resblocks.<k>.VPT_shallow` for k = 1 .. depth-1 (deep prompts of layer k). The encoders use
  them when the caller passes no prompts, so `visual(image)` and `transformer(x)` work unchanged, the fork's
  checkpoint keys load and its "VPT"-in-name freezing rule makes them trainable.

Owned prompts are fp32, normal(std 0.02), drawn from the global RNG in the order of this project's IVLP and
VPT trainers (text deep prompts, then the vision prompt, then the vision deep prompts), so a seed gives the
same prompts as those trainers. (The fork's own values differ anyway: its build_model first draws a random
initialisation of the whole CLIP.) Like our trainers, and unlike the fork, prompts are cast to the
activations' dtype where they enter, so fp32 runs are not rounded through fp16.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .model import OWNED_DEEP_PROMPT, OWNED_PROMPT, CLIP, CLIPConfig

PLAIN_DESIGNS = ("CoOp", "CoCoOp")
OWNED_PROMPT_DESIGNS = ("IVLP", "VPT")
DESIGNS = PLAIN_DESIGNS + ("MaPLe",) + OWNED_PROMPT_DESIGNS
_SIZE_KEYS = ("vision_depth", "language_depth", "vision_ctx", "language_ctx")


@dataclass(frozen=True)
class Design:
    trainer: str
    vision_depth: int = 0
    language_depth: int = 0
    vision_ctx: int = 0
    language_ctx: int = 0


def _count(details: dict, key: str) -> int:
    value = details.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"design_details[{key!r}] must be a non-negative int; got {value!r}")
    return value


def parse_design(details: dict | None) -> Design:
    """The design a `design_details` dict asks for (None or {} = plain CLIP); unknown trainer names and
    negative or non-int sizes are refused, naming the key."""
    if not details:
        return Design("CoOp")
    if not isinstance(details, dict):
        raise ValueError(f"design_details must be a dict (e.g. {{'trainer': 'IVLP', 'vision_depth': 9, ...}}); "
                         f"got {type(details).__name__}")
    trainer = details.get("trainer", "CoOp")
    if trainer not in DESIGNS:
        raise ValueError(f"design_details['trainer'] is {trainer!r}; this CLIP knows the designs {list(DESIGNS)}")
    design = Design(trainer, **{key: _count(details, key) for key in _SIZE_KEYS})
    if trainer == "MaPLe":
        _count(details, "maple_length")
    return design


def check_design_fits(design: Design, config: CLIPConfig, source: str = "state dict") -> None:
    """Refuse a design the architecture cannot take (vision prompts on a ResNet, more prompted layers than
    the tower has, prompted layers without prompt tokens), naming the key."""
    vision_prompts = design.trainer == "MaPLe" or (design.trainer in OWNED_PROMPT_DESIGNS and design.vision_depth)
    if vision_prompts and config.vision_patch_size is None:
        raise ValueError(f"design_details asks for {design.trainer} vision prompts, which need a ViT backbone; "
                         f"{source} is a ModifiedResNet")
    if design.trainer not in OWNED_PROMPT_DESIGNS:
        return
    towers = (("vision", config.vision_layers), ("language", config.transformer_layers))
    for tower, layers in towers:
        depth, ctx = getattr(design, f"{tower}_depth"), getattr(design, f"{tower}_ctx")
        if depth and depth > layers:  # (a ResNet's vision depth is 0 here: refused above otherwise)
            raise ValueError(f"design_details['{tower}_depth'] is {depth} but the {tower} transformer of {source} "
                             f"has {layers} layers")
        if depth and ctx < 1:
            raise ValueError(f"design_details['{tower}_depth'] is {depth} but '{tower}_ctx' is {ctx}: prompted "
                             "layers need at least one prompt token")


def _normal_prompt(n_tokens: int, width: int) -> nn.Parameter:
    prompt = nn.Parameter(torch.empty(n_tokens, width))
    nn.init.normal_(prompt, std=0.02)
    return prompt


def _own_deep_prompts(transformer: nn.Module, depth: int, n_tokens: int) -> None:
    for block in list(transformer.resblocks)[1:depth]:
        setattr(block, OWNED_DEEP_PROMPT, _normal_prompt(n_tokens, transformer.width))


def attach_owned_prompts(model: CLIP, design: Design) -> CLIP:
    """Give `model` the prompts `design` says the model owns (IVLP / VPT); other designs change nothing.
    Call `check_design_fits` first."""
    if design.trainer not in OWNED_PROMPT_DESIGNS:
        return model
    _own_deep_prompts(model.transformer, design.language_depth, design.language_ctx)
    if design.vision_depth:
        setattr(model.visual, OWNED_PROMPT, _normal_prompt(design.vision_ctx, model.visual.width))
        _own_deep_prompts(model.visual.transformer, design.vision_depth, design.vision_ctx)
    return model
