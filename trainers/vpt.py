"""VPT (deep vision prompting): learned tokens appended to the patch tokens of the first
PROMPT_DEPTH_VISION vision layers; the text side is the fixed prompt "a photo of a <class>."."""
from typing import Sequence

import torch
import torch.nn as nn

from dassl.engine import TRAINER_REGISTRY

from .common import (FixedTextLearner, PromptedCLIP, PromptTrainer, SpeedOptions, check_depth,
                     check_vision_prompt_tokens, encode_class_templates, prompt_parameters, vision_width)
from .method import MethodSpec

TEXT_TEMPLATE = "a photo of a {}."


class VisionPromptLearner(FixedTextLearner):
    """`vision_ctx` (appended at the input) and `vision_deep_prompts` (layers 1..). TRAINER.VPT.CTX_INIT is
    not used, as in the official trainer."""

    def __init__(self, cfg, classnames: Sequence[str], clip_model: nn.Module, options: SpeedOptions):
        node = cfg.TRAINER.VPT
        visual_width = vision_width(clip_model, "VPT")
        check_depth(node.PROMPT_DEPTH_VISION, clip_model.visual.transformer.layers, "TRAINER.VPT.PROMPT_DEPTH_VISION")
        check_vision_prompt_tokens(node.N_CTX_VISION, clip_model, "TRAINER.VPT.N_CTX_VISION")
        print("Vision Prompting Design")
        print(f"Number of context words (tokens) for Vision prompting: {node.N_CTX_VISION}")
        print(f'Using fixed hand crafted prompts: "{TEXT_TEMPLATE}"')
        super().__init__(encode_class_templates(clip_model, classnames, [TEXT_TEMPLATE], options))
        self.vision_ctx = prompt_parameters(1, node.N_CTX_VISION, visual_width)[0]
        self.vision_deep_prompts = prompt_parameters(node.PROMPT_DEPTH_VISION - 1, node.N_CTX_VISION, visual_width)

    def vision_prompts(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.vision_ctx, list(self.vision_deep_prompts)


@TRAINER_REGISTRY.register()
class VPT(PromptTrainer):
    METHOD_KEY = "VPT"
    MODEL_NAME = "prompt_learner"
    SPEC = MethodSpec(default_config="vit_b16_c2_ep5_batch4_4")

    def build_custom_clip(self, clip_model: nn.Module, classnames: Sequence[str]) -> PromptedCLIP:
        options = SpeedOptions.from_cfg(self.cfg)
        return PromptedCLIP(clip_model, VisionPromptLearner(self.cfg, classnames, clip_model, options), options)
