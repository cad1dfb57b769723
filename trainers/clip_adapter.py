"""CLIP-Adapter (Gao et al., IJCV 2023; gaopengcuhk/CLIP-Adapter `clip_adapter.py`): a bottleneck MLP on the frozen
image features, mixed back into them with a residual ratio; the classifier is zero-shot CLIP's single hand-written
template per dataset. Only the adapter trains.

    x = encode_image(image)                       (projected features, not normalised)
    a = ReLU(W2 ReLU(W1 x))                       W1: [D/r, D], W2: [D, D/r], no biases (r = REDUCTION, 4)
    f = RATIO * a + (1 - RATIO) * x               (RATIO 0.2)
    logits = logit_scale.exp() * normalise(f) @ normalise(text features)^T

D is the loaded backbone's embedding width (the official file writes RN50's 1024). The adapter is registered as
`clip_adapter` with the official module names (`fc.0.weight`, `fc.2.weight`), so official checkpoints load. The
official file always computes in fp32; TRAINER.CLIP_ADAPTER.PREC adds the other modes (the adapter stays an fp32
master module; under fp16 the image features are cast to it).
"""
from typing import Sequence

import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from clip.model import fused_attention
from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY
from dassl.metrics import compute_accuracy

from .common import FixedTextLearner, PromptedCLIP, PromptTrainer, SpeedOptions, encode_class_templates, l2_normalize
from .method import MethodSpec
from .zsclip import dataset_template


class Adapter(nn.Module):
    """The official bottleneck: Linear(D, D // reduction) - ReLU - Linear(D // reduction, D) - ReLU, no biases."""

    def __init__(self, width: int, reduction: int):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(width, width // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(width // reduction, width, bias=False),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class AdaptedCLIP(PromptedCLIP):
    """Frozen CLIP, fixed class text features (the prompt learner holds no parameter) and the trained adapter,
    applied to the image features outside the evaluation cache (which keeps the text side only)."""

    def __init__(self, clip_model: nn.Module, text_features: torch.Tensor, adapter: Adapter, ratio: float,
                 options: SpeedOptions):
        super().__init__(clip_model, FixedTextLearner(text_features), options)
        self.clip_adapter = adapter
        self.ratio = ratio

    def features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with fused_attention(self.options.fused_attention):
            text_features, _ = self.class_side()
            image_features = self.clip_model.encode_image(image)
        return l2_normalize(self.adapt(image_features)), text_features

    def adapt(self, image_features: torch.Tensor) -> torch.Tensor:
        """The residual mix, in the official order of operations (bit-identical in fp32)."""
        image_features = image_features.to(self.clip_adapter.fc[0].weight.dtype)  # fp16 features, fp32 adapter
        x = self.clip_adapter(image_features)
        return self.ratio * x + (1 - self.ratio) * image_features


@TRAINER_REGISTRY.register()
class CLIP_Adapter(PromptTrainer):
    """CLIP-Adapter, registered under the official file's name (`CLIP_Adapter`, checkpoint folder `clip_adapter`)."""

    METHOD_KEY = "CLIP_ADAPTER"
    MODEL_NAME = "clip_adapter"
    SPEC = MethodSpec(trained=("clip_adapter",), config_dir="CLIP_Adapter", default_config="vit_b16")

    @staticmethod
    def extend_cfg(cfg) -> None:
        cfg.TRAINER.CLIP_ADAPTER = CN()
        cfg.TRAINER.CLIP_ADAPTER.RATIO = 0.2  # the official residual ratio (`ratio = 0.2` in forward)
        cfg.TRAINER.CLIP_ADAPTER.REDUCTION = 4  # the official bottleneck reduction (`Adapter(1024, 4)`)
        cfg.TRAINER.CLIP_ADAPTER.PREC = "fp32"  # the official file calls clip_model.float()

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        node = cfg.TRAINER.CLIP_ADAPTER
        if not 0.0 <= node.RATIO <= 1.0:
            raise ConfigError(f"TRAINER.CLIP_ADAPTER.RATIO must be between 0 and 1 (the adapter's share); got {node.RATIO}")
        if node.REDUCTION < 1:
            raise ConfigError(f"TRAINER.CLIP_ADAPTER.REDUCTION must be >= 1; got {node.REDUCTION}")

    def build_custom_clip(self, clip_model: nn.Module, classnames: Sequence[str]) -> PromptedCLIP:
        node = self.method_cfg
        width = clip_model.text_projection.shape[1]
        if width // node.REDUCTION < 1:
            raise ConfigError(f"TRAINER.CLIP_ADAPTER.REDUCTION {node.REDUCTION} leaves no hidden unit of the "
                              f"{width}-wide embedding; use at most {width}")
        template = dataset_template(self.cfg.DATASET.NAME)
        print(f"Prompt template: {template!r}")
        options = SpeedOptions.from_cfg(self.cfg)
        text_features = encode_class_templates(clip_model, classnames, [template], options)
        return AdaptedCLIP(clip_model, text_features, Adapter(width, node.REDUCTION), node.RATIO, options)

    def registered_module(self) -> nn.Module:
        return self.model.clip_adapter

    def loss_summary(self, loss: torch.Tensor, logits: torch.Tensor, label: torch.Tensor) -> dict:
        return {"loss": loss.detach(), "acc": compute_accuracy(logits, label)[0]}
