"""KgCoOp (Yao et al., CVPR 2023, "Visual-Language Prompt Tuning with Knowledge-guided Context Optimization"):
CoOp's learned context, trained with cross-entropy plus W times the distance of the learned class text features
to those of a hand-written prompt, so that the prompts stay near CLIP's general knowledge.

Facts of the official trainer (htyao89/KgCoOp, trainers/kgcoop.py, at c43ccc3):
- distance = 1 - mean over classes of cos(t_c, t0_c), t_c the learned features (normalised), t0_c the features
  of the dataset's template (`KGCOOP_TEMPLATES`, CoOp's zero-shot ones but for DTD), normalised twice;
- t0 is computed by a second CLIP with OpenAI's fp16 weights whatever PREC, and normalised in fp16: so here
  (`fp16_text_features`, a temporary fp16 copy in the other precisions);
- the official scripts: 16 shots, N_CTX 4 from "a photo of a" (its CTX_INIT True), W 8.0, SGD 100 epochs.

Deviations, none of which changes the method: the cosine is summed in fp32 (the official one in CLIP's dtype,
the same under PREC fp32); the official `amp` branch fails (it takes the model's (logits, distance) pair for logits), ours trains with
the distance under amp and bf16 too; a dataset without a template uses "a photo of a {}." (the official
raises a KeyError); the official file's unused modules (`meta_net`, `bias_vectors`, `adapter`) are left out,
and its checkpoints load (only `ctx` is trained in both).
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip.model import convert_weights
from dassl.engine import TRAINER_REGISTRY
from dassl.metrics import compute_accuracy

from .common import PromptedCLIP, PromptTrainer, SpeedOptions, cosine_logits, encode_texts
from .coop import PromptLearner
from .method import MethodSpec
from .zsclip import CUSTOM_TEMPLATES, DEFAULT_TEMPLATE

KGCOOP_TEMPLATES = {**CUSTOM_TEMPLATES, "DescribableTextures": "a photo of a {}, a type of texture."}


def fp16_normalize(features: torch.Tensor) -> torch.Tensor:
    """L2-normalised in fp16 arithmetic, as the official files normalise their fp16 features; fp32 out."""
    features = features.half()
    return (features / features.norm(dim=-1, keepdim=True)).float()


@torch.no_grad()
def fp16_text_features(clip_model: nn.Module, texts: Sequence[str], options: SpeedOptions) -> torch.Tensor:
    """[N, E] features of hand-written texts as the official KgCoOp and TCP files compute them: by CLIP with
    OpenAI's fp16 weights whatever PREC (a temporary fp16 copy when the model computes in another dtype),
    normalised once in fp16; returned in fp32 (holding the fp16 values)."""
    model = clip_model
    if clip_model.dtype != torch.float16:
        model = copy.deepcopy(clip_model)
        convert_weights(model)
    with torch.autocast(clip_model.logit_scale.device.type, enabled=False):
        return fp16_normalize(encode_texts(model, texts, options))


def class_texts(templates: dict, dataset: str, classnames: Sequence[str]) -> list[str]:
    template = templates.get(dataset, DEFAULT_TEMPLATE)
    return [template.format(name.replace("_", " ")) for name in classnames]


def knowledge_distance(text_features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """1 - mean_c cos(text_c, reference_c) as the official `CosineSimilarity(eps=1e-7)` computes it on fp32 learned
    features and the fp16 reference: torch divides each side by its norm in that side's dtype, so the reference
    is normalised once more in fp16 (an fp32 cosine would make it exactly unit and differ by its fp16 rounding,
    1e-4 of the distance on the tests' backbone); the products are summed in fp32."""
    with torch.autocast(text_features.device.type, enabled=False):
        text = text_features.float()
        text = text / text.norm(dim=-1, keepdim=True).clamp_min(1e-7)
        return 1.0 - (text * fp16_normalize(reference)).sum(dim=1).mean()


class KgCoOpCLIP(PromptedCLIP):
    """CoOp's prompted CLIP; forward(image, with_distance=True) also gives the knowledge-guided distance."""

    def __init__(self, clip_model: nn.Module, prompt_learner: nn.Module, options: SpeedOptions,
                 reference_texts: Sequence[str] = ()):
        super().__init__(clip_model, prompt_learner, options)
        self.reference_texts = list(reference_texts)
        # computed at the first training batch: evaluation-only runs never pay for the fp16 copy
        self.register_buffer("reference_features", None, persistent=False)

    def knowledge_reference(self) -> torch.Tensor:
        """[C, E] the hand-written prompts' features the learned ones are pulled towards."""
        if self.reference_features is None:
            once = fp16_text_features(self.clip_model, self.reference_texts, self.options)
            self.reference_features = fp16_normalize(once)  # the official forward normalises them again
        return self.reference_features

    def forward(self, image: torch.Tensor, with_distance: bool = False):
        if not with_distance:
            return super().forward(image)
        reference = self.knowledge_reference()
        image_features, text_features = self.features(image)
        return cosine_logits(self.logit_scale(), image_features, text_features), knowledge_distance(
            text_features, reference)


@TRAINER_REGISTRY.register()
class KgCoOp(PromptTrainer):
    METHOD_KEY = "KGCOOP"
    MODEL_NAME = "prompt_learner"
    REGISTER_PROMPT_LEARNER = True
    SPEC = MethodSpec(default_config="vit_b16_ep100_ctxv1")

    @staticmethod
    def extend_cfg(cfg) -> None:
        # the official keys (its TRAINER.COOP node) under KgCoOp's own node; CTX_INIT is CoOp's phrase here
        # (the official bool True means "a photo of a")
        cfg.TRAINER.KGCOOP = CN()
        cfg.TRAINER.KGCOOP.N_CTX = 16
        cfg.TRAINER.KGCOOP.CSC = False
        cfg.TRAINER.KGCOOP.CTX_INIT = ""
        cfg.TRAINER.KGCOOP.PREC = "fp16"
        cfg.TRAINER.KGCOOP.CLASS_TOKEN_POSITION = "end"
        cfg.TRAINER.KGCOOP.W = 1.0  # weight of the knowledge-guided distance (official scripts: 8.0)

    def build_custom_clip(self, clip_model: nn.Module, classnames: Sequence[str]) -> PromptedCLIP:
        learner = PromptLearner(self.cfg, classnames, clip_model, method=self.METHOD_KEY)
        texts = class_texts(KGCOOP_TEMPLATES, self.cfg.DATASET.NAME, classnames)
        print(f"Hand-written prompts: {texts}")
        return KgCoOpCLIP(clip_model, learner, SpeedOptions.from_cfg(self.cfg), texts)

    def training_loss(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, distance = self.model(image, with_distance=True)
        return F.cross_entropy(logits, label) + self.method_cfg.W * distance, logits

    def loss_summary(self, loss: torch.Tensor, logits: torch.Tensor, label: torch.Tensor) -> dict:
        return {"loss": loss.detach(), "acc": compute_accuracy(logits, label)[0]}
