"""MaPLe (Khattak et al., CVPR 2023): text prompts in the first PROMPT_DEPTH layers of the text encoder,
coupled to the vision prompts of the same layers by linear projections (vision prompt = proj(text prompt))."""
import copy
from typing import Sequence

import torch
import torch.nn as nn

from dassl.engine import TRAINER_REGISTRY

from .common import (PromptedCLIP, PromptTrainer, SpeedOptions, TextPromptLearner, check_depth, init_text_context,
                     prompt_parameters, round_to_dtype_, vision_width)
from .method import MethodSpec


class MultiModalPromptLearner(TextPromptLearner):
    """Parameters (official names): `ctx` [N, text width] (layer 0), `proj` (text -> vision width, shallow
    coupling), `compound_prompts_text` (J-1 deep text prompts) and `compound_prompt_projections` (J-1 deep
    couplings, deep copies of ONE Linear, so they start identical as in the official code)."""

    def __init__(self, cfg, classnames: Sequence[str], clip_model: nn.Module):
        node = cfg.TRAINER.MAPLE
        width = clip_model.ln_final.weight.shape[0]
        visual_width = vision_width(clip_model, "MaPLe")
        layers = min(clip_model.transformer.layers, clip_model.visual.transformer.layers)
        check_depth(node.PROMPT_DEPTH, layers, "TRAINER.MAPLE.PROMPT_DEPTH")
        # Creation order = the official one (ctx, proj, deep prompts, deep projections), so the draws from the
        # global RNG follow the official sequence from here on (our CLIP construction itself draws nothing).
        ctx, prefix, n_ctx = init_text_context(clip_model, node.N_CTX, node.CTX_INIT, derive_n_ctx=False)
        print("MaPLe design: Multi-modal Prompt Learning")
        print(f'Initial context: "{prefix}"')
        print(f"Number of MaPLe context words (tokens): {n_ctx}")
        proj = round_to_dtype_(nn.Linear(width, visual_width), clip_model.dtype)
        deep_text = prompt_parameters(node.PROMPT_DEPTH - 1, n_ctx, width)
        single_layer = nn.Linear(width, visual_width)
        super().__init__(clip_model, classnames, ctx, prefix, n_ctx)
        self.proj = proj
        self.compound_prompts_text = deep_text
        self.compound_prompt_projections = nn.ModuleList(
            copy.deepcopy(single_layer) for _ in range(node.PROMPT_DEPTH - 1))

    def deep_text_prompts(self) -> list[torch.Tensor]:
        return list(self.compound_prompts_text)

    def vision_prompts(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        deep = [layer(prompt) for layer, prompt in zip(self.compound_prompt_projections, self.compound_prompts_text)]
        return self.proj(self.ctx), deep


@TRAINER_REGISTRY.register()
class MaPLe(PromptTrainer):
    METHOD_KEY = "MAPLE"
    MODEL_NAME = "MultiModalPromptLearner"
    SPEC = MethodSpec(default_config="vit_b16_c2_ep5_batch4_2ctx",
                      protocol_configs={"xd": "vit_b16_c2_ep5_batch4_2ctx_cross_datasets"})

    def build_custom_clip(self, clip_model: nn.Module, classnames: Sequence[str]) -> PromptedCLIP:
        learner = MultiModalPromptLearner(self.cfg, classnames, clip_model)
        return PromptedCLIP(clip_model, learner, SpeedOptions.from_cfg(self.cfg))
