"""ProGrad (Zhu et al., ICCV 2023, "Prompt-aligned Gradient for Prompt Tuning"): CoOp's context updated only
along directions that do not conflict with the zero-shot prediction: with g_ce the gradient of the
cross-entropy and g_kl that of the distillation loss towards zero-shot CLIP, a conflicting g_ce
(cos(g_ce, g_kl) < 0) is replaced by g_ce - LAMBDA (g_ce . u) u, u = g_kl / |g_kl| (dassl's
`prograd_backward_and_update`, the fork's update).

Facts of the official trainer (BeierZhu/Prompt-align ProGrad.public/trainers/prograd.py at 1b76203; the same
file in htyao89/KgCoOp):
- distillation loss: -sum_c softmax(z0 / T) log_softmax(z / T) * T^2, averaged over the batch, z0 the logits of
  a separate fp32 zero-shot CLIP with the dataset's template (`PROGRAD_TEMPLATES`, its own table);
- CTX_INIT True: the template's words without " {}." initialise the last of the N_CTX vectors (as many as the
  phrase has words), the others are zeros, and the prompt is "X .. X <phrase> <class>." (so when the phrase has
  more tokens than words, its last tokens stay fixed words after the context, as officially);
- the official configs: RN50, SGD 0.002, batch 32, 50 / 100 / 200 epochs; scripts: N_CTX 16, LAMBDA 1.0, T 1.0
  (0.8 for 8 and 16 shots on Flowers102, DTD and EuroSAT), base-to-novel with rn50_ep100.

Deviations, none of which changes the method: the zero-shot image features come from the model's own frozen
image tower (the official builds a second fp32 CLIP; under PREC fp16 ours are the fp16 tower's, so the teacher
logits differ by fp16 rounding; in fp32 they are the same); its text features from a temporary fp32 copy; the
official `amp` branch fails (it passes the loss pair to the GradScaler), ours projects the scaled gradients;
a dataset without a template uses "a photo of a {}." (the official raises a KeyError).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip import clip
from clip.model import fused_attention
from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY
from dassl.metrics import compute_accuracy

from .common import (PromptedCLIP, PromptTrainer, SpeedOptions, cosine_logits, fp32_template_features,
                     init_text_context, l2_normalize)
from .coop import PromptLearner
from .method import MethodSpec
from .zsclip import DEFAULT_TEMPLATE

PROGRAD_TEMPLATES = {
    "OxfordPets": "a type of pet, a photo of a {}.",
    "OxfordFlowers": "a type of flower, a photo of a {}.",
    "FGVCAircraft": "a type of aircraft, a photo of a {}.",
    "DescribableTextures": "a texture of {}.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a type of food, a photo of {}.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}


def dataset_template(dataset: str) -> str:
    return PROGRAD_TEMPLATES.get(dataset, DEFAULT_TEMPLATE)


class ProGradPromptLearner(PromptLearner):
    """CoOp's learner; CTX_INIT (a bool, as officially) initialises the context from the dataset's template."""

    def initial_context(self, cfg, node, classnames: Sequence[str], clip_model: nn.Module):
        if not node.CTX_INIT:
            class_specific = bool(node.CSC)
            print("Initializing class-specific contexts" if class_specific else "Initializing a generic context")
            return init_text_context(clip_model, node.N_CTX, "", derive_n_ctx=True,
                                     n_cls_specific=len(classnames) if class_specific else 0)
        phrase = dataset_template(cfg.DATASET.NAME).replace(" {}.", "").replace("_", " ")
        n_words, n_ctx = len(phrase.split(" ")), node.N_CTX
        if n_ctx < n_words:
            raise ConfigError(f"TRAINER.PROGRAD.N_CTX {n_ctx} is smaller than the {n_words} words of the initial "
                             f"phrase {phrase!r} (CTX_INIT True); use N_CTX >= {n_words} or CTX_INIT False")
        tokens = clip.tokenize(phrase).to(clip_model.token_embedding.weight.device)
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokens).to(clip_model.dtype)
        ctx = torch.zeros(n_ctx, embedding.shape[-1], dtype=clip_model.dtype, device=embedding.device)
        ctx[n_ctx - n_words:] = embedding[0, 1:1 + n_words]
        prefix = " ".join(["X"] * (n_ctx - n_words) + [phrase])
        return nn.Parameter(ctx.float()), prefix, n_ctx


class ProGradCLIP(PromptedCLIP):
    """CoOp's prompted CLIP; forward(image, with_teacher=True) also gives the zero-shot logits."""

    def __init__(self, clip_model: nn.Module, prompt_learner: nn.Module, options: SpeedOptions,
                 classnames: Sequence[str], template: str):
        super().__init__(clip_model, prompt_learner, options)
        self.classnames, self.template = list(classnames), template
        self.register_buffer("teacher_text", None, persistent=False)  # at the first training batch

    def forward(self, image: torch.Tensor, with_teacher: bool = False):
        if not with_teacher:
            return super().forward(image)
        if self.teacher_text is None:
            self.teacher_text = fp32_template_features(self.clip_model, self.classnames, [self.template],
                                                       self.options)
        image_features, text_features = self.features(image)
        scale = self.logit_scale()
        with torch.no_grad(), fused_attention(self.options.fused_attention):
            teacher_image = l2_normalize(self.clip_model.encode_image(image))
        return (cosine_logits(scale, image_features, text_features),
                cosine_logits(scale, teacher_image, self.teacher_text))


def prograd_losses(logits: torch.Tensor, teacher_logits: torch.Tensor, label: torch.Tensor,
                   temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy, distillation loss -sum softmax(z0/T) log_softmax(z/T) T^2, batch mean)."""
    xe = F.cross_entropy(logits, label)
    teacher = F.softmax(teacher_logits.detach() / temperature, dim=-1)
    kl = -(teacher * F.log_softmax(logits / temperature, dim=-1)).sum(1).mean() * temperature * temperature
    return xe, kl


@TRAINER_REGISTRY.register()
class ProGrad(PromptTrainer):
    METHOD_KEY = "PROGRAD"
    MODEL_NAME = "prompt_learner"
    REGISTER_PROMPT_LEARNER = True
    SPEC = MethodSpec(default_config="rn50_ep100")

    @staticmethod
    def extend_cfg(cfg) -> None:
        # the official TRAINER.COOP and LOSS keys under ProGrad's own node (CTX_INIT a bool, as officially)
        cfg.TRAINER.PROGRAD = CN()
        cfg.TRAINER.PROGRAD.N_CTX = 16
        cfg.TRAINER.PROGRAD.CSC = False
        cfg.TRAINER.PROGRAD.CTX_INIT = False
        cfg.TRAINER.PROGRAD.PREC = "fp16"
        cfg.TRAINER.PROGRAD.CLASS_TOKEN_POSITION = "end"
        cfg.TRAINER.PROGRAD.LAMBDA = 1.0  # official LOSS.LAMBDA
        cfg.TRAINER.PROGRAD.T = 1.0  # official LOSS.T

    def build_custom_clip(self, clip_model: nn.Module, classnames: Sequence[str]) -> PromptedCLIP:
        learner = ProGradPromptLearner(self.cfg, classnames, clip_model, method=self.METHOD_KEY)
        template = dataset_template(self.cfg.DATASET.NAME)
        print(f"Zero-shot template: {template!r}")
        return ProGradCLIP(clip_model, learner, SpeedOptions.from_cfg(self.cfg), classnames, template)

    def training_loss(self, image: torch.Tensor, label: torch.Tensor):
        logits, teacher_logits = self.model(image, with_teacher=True)
        return prograd_losses(logits, teacher_logits, label, self.method_cfg.T), logits

    def backward_and_update(self, losses) -> None:
        xe, kl = losses
        self.prograd_backward_and_update(xe, kl, self.method_cfg.LAMBDA)

    def loss_summary(self, losses, logits: torch.Tensor, label: torch.Tensor) -> dict:
        xe, kl = losses
        return {"xe_loss": xe.detach(), "kl_loss": kl.detach(), "acc": compute_accuracy(logits, label)[0]}
