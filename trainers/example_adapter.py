"""ExampleAdapter, the worked example of docs/ADDING_A_METHOD.md (a teaching method, not a published one): CoOp's
learned context in front of the class name, plus a small residual adapter on the image features, the two trained
together. It is one file and one YAML (configs/trainers/ExampleAdapter/demo.yaml); nothing else names it."""
from typing import Sequence

import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY

from .common import (PromptedCLIP, PromptTrainer, SpeedOptions, TextPromptLearner, cosine_logits, init_text_context,
                     l2_normalize)
from .method import MethodSpec


class AdaptedCLIP(PromptedCLIP):
    """The prompted CLIP with `adapter` (feature width -> width / 4 -> width) mixed into the image features:
    f + RATIO * adapter(f). Its last layer starts at zero, so training starts from the prompted CLIP."""

    def __init__(self, clip_model: nn.Module, prompt_learner: TextPromptLearner, options: SpeedOptions, ratio: float):
        super().__init__(clip_model, prompt_learner, options)
        width = clip_model.visual.output_dim  # from the loaded model: any CLIP size
        self.adapter = nn.Sequential(nn.Linear(width, width // 4), nn.ReLU(), nn.Linear(width // 4, width))
        nn.init.zeros_(self.adapter[2].weight)
        nn.init.zeros_(self.adapter[2].bias)
        self.ratio = ratio

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # The adapter acts on what `features` returns, so the evaluation cache of the class side stays valid.
        image_features, text_features = self.features(image)
        adapted = l2_normalize(image_features + self.ratio * self.adapter(image_features))
        return cosine_logits(self.logit_scale(), adapted, text_features)


@TRAINER_REGISTRY.register()
class ExampleAdapter(PromptTrainer):
    METHOD_KEY = "EXAMPLE_ADAPTER"  # its config node, TRAINER.EXAMPLE_ADAPTER
    MODEL_NAME = "AdaptedCLIP"  # the checkpoint folder
    SPEC = MethodSpec(trained=("prompt_learner", "adapter"))

    @staticmethod
    def extend_cfg(cfg) -> None:
        cfg.TRAINER.EXAMPLE_ADAPTER = CN()
        cfg.TRAINER.EXAMPLE_ADAPTER.N_CTX = 4
        cfg.TRAINER.EXAMPLE_ADAPTER.CTX_INIT = "a photo of a"
        cfg.TRAINER.EXAMPLE_ADAPTER.PREC = "fp16"
        cfg.TRAINER.EXAMPLE_ADAPTER.RATIO = 0.2

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)  # PREC among the declared precisions, N_CTX >= 1
        ratio = cfg.TRAINER.EXAMPLE_ADAPTER.RATIO
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"TRAINER.EXAMPLE_ADAPTER.RATIO must be between 0 and 1; got {ratio}")

    def build_custom_clip(self, clip_model: nn.Module, classnames: Sequence[str]) -> PromptedCLIP:
        node = self.method_cfg
        ctx, prefix, n_ctx = init_text_context(clip_model, node.N_CTX, node.CTX_INIT, derive_n_ctx=True)
        learner = TextPromptLearner(clip_model, classnames, ctx, prefix, n_ctx)
        return AdaptedCLIP(clip_model, learner, SpeedOptions.from_cfg(self.cfg), node.RATIO)
