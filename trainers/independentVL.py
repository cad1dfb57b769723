"""IVLP: independent deep prompts in the text and the vision transformer (no coupling). With
N_CTX_VISION 0 / PROMPT_DEPTH_VISION 0 it is the "deep language prompting" ablation."""
from typing import Optional, Sequence

import torch
import torch.nn as nn

from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY

from .common import (PromptedCLIP, PromptTrainer, SpeedOptions, TextPromptLearner, check_depth,
                     check_vision_prompt_tokens, init_text_context,
                     prompt_parameters, vision_width)
from .method import MethodSpec


class VLPromptLearner(TextPromptLearner):
    """`ctx` (text layer 0), `text_deep_prompts` (text layers 1..), `vision_ctx` (appended to the patch tokens)
    and `vision_deep_prompts` (vision layers 1..). The official code keeps the last three inside CLIP's
    modules; `rename_official_vpt_key` maps those checkpoint keys to these names."""

    def __init__(self, cfg, classnames: Sequence[str], clip_model: nn.Module, method: str = "IVLP"):
        # `method`: the config node TRAINER.<method> holding the keys (PromptSRC has the same architecture)
        node = cfg.TRAINER[method]
        if node.PROMPT_DEPTH_TEXT < 1:
            raise ConfigError(f"TRAINER.{method}.PROMPT_DEPTH_TEXT must be >= 1 for independent V-L prompting; "
                             "use the VPT trainer to learn vision prompts only")
        width = clip_model.ln_final.weight.shape[0]
        check_depth(node.PROMPT_DEPTH_TEXT, clip_model.transformer.layers, f"TRAINER.{method}.PROMPT_DEPTH_TEXT")
        ctx, prefix, n_ctx = init_text_context(clip_model, node.N_CTX_TEXT, node.CTX_INIT, derive_n_ctx=False)
        print("Independent V-L design")
        print(f'Initial text context: "{prefix}"')
        print(f"Number of context words (tokens) for Language prompting: {n_ctx}")
        print(f"Number of context words (tokens) for Vision prompting: {node.N_CTX_VISION}")
        super().__init__(clip_model, classnames, ctx, prefix, n_ctx)
        self.text_deep_prompts = prompt_parameters(node.PROMPT_DEPTH_TEXT - 1, n_ctx, width)
        self.vision_ctx: Optional[nn.Parameter] = None
        self.vision_deep_prompts = nn.ParameterList()
        if node.N_CTX_VISION > 0 and node.PROMPT_DEPTH_VISION > 0:
            visual_width = vision_width(clip_model, f"{method} with vision prompts")
            check_depth(node.PROMPT_DEPTH_VISION, clip_model.visual.transformer.layers,
                        f"TRAINER.{method}.PROMPT_DEPTH_VISION")
            check_vision_prompt_tokens(node.N_CTX_VISION, clip_model, f"TRAINER.{method}.N_CTX_VISION")
            self.vision_ctx = prompt_parameters(1, node.N_CTX_VISION, visual_width)[0]
            self.vision_deep_prompts = prompt_parameters(node.PROMPT_DEPTH_VISION - 1, node.N_CTX_VISION, visual_width)

    def deep_text_prompts(self) -> list[torch.Tensor]:
        return list(self.text_deep_prompts)

    def vision_prompts(self) -> tuple[Optional[torch.Tensor], list[torch.Tensor]]:
        return self.vision_ctx, list(self.vision_deep_prompts)


@TRAINER_REGISTRY.register()
class IVLP(PromptTrainer):
    METHOD_KEY = "IVLP"
    MODEL_NAME = "VLPromptLearner"
    SPEC = MethodSpec(default_config="vit_b16_c2_ep5_batch4_2+2ctx")

    def build_custom_clip(self, clip_model: nn.Module, classnames: Sequence[str]) -> PromptedCLIP:
        learner = VLPromptLearner(self.cfg, classnames, clip_model)
        return PromptedCLIP(clip_model, learner, SpeedOptions.from_cfg(self.cfg))
