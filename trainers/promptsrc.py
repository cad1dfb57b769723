"""PromptSRC (Khattak et al., ICCV 2023): IVLP's independent vision-language prompts, regularised towards
the frozen CLIP ("self-regulating prompts").

- Mutual agreement: the prompted text / image features are pulled towards the zero-shot ones (L1) and the
  prompted logits towards the zero-shot logits (KL), on top of the cross-entropy.
- Textual diversity: the teacher's class text features average 60 hand-written templates.
- Gaussian prompt aggregation (GPA): the deployed prompts are a Gaussian-weighted average over epochs.

Deviations from the official trainer (PROTOCOL.md §4.8, §8 items 17-20), none of which changes the method:
- The teacher image encoder is the model's own frozen CLIP visual tower run without prompts: the same
  weights and dtype as the official separate copy `ZS_image_encoder`, without a second CLIP in memory.
  Official checkpoints load all the same (their `prompt_learner.ZS_image_encoder.*` keys are not
  trainable parameters and are ignored).
- The teacher text features are computed with an fp32 copy of CLIP that exists only while they are
  computed (the official keeps a CUDA CLIP alive for it); they are computed at the first training batch,
  before its forward, so evaluation-only runs and the inference API never pay for the 60-template ensemble
  and the copy never adds to the memory of a step's activations.
- GPA averages the trainable prompt tensors only, in fp32; the official averages the whole state dict
  (frozen CLIP and ZS encoder included) in each tensor's own dtype, so its fp16 frozen weights come out
  slightly perturbed by rounding. The running sum and the number of aggregated epochs are buffers of the
  model, so they are saved in every checkpoint and a resumed run continues the aggregation exactly.
- No `.cuda()`: devices follow the model; PREC fp32, amp and bf16 work as well as fp16.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from clip.model import fused_attention
from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY

from .common import PromptedCLIP, PromptTrainer, SpeedOptions, cosine_logits, fp32_template_features, l2_normalize
from .imagenet_templates import IMAGENET_TEMPLATES
from .independentVL import VLPromptLearner
from .method import MethodSpec

# OpenAI's ImageNet templates with "a photo of a {}." moved to the front, truncated to 60 (the official
# PromptSRC list: items 39, 0..38, 40..59 of IMAGENET_TEMPLATES).
PROMPTSRC_TEMPLATES = (IMAGENET_TEMPLATES[39],) + IMAGENET_TEMPLATES[:39] + IMAGENET_TEMPLATES[40:60]


# --------------------------------------------------------------------------------------------------------
# Gaussian prompt aggregation


def gpa_weights(mean: float, std: float, max_epoch: int) -> torch.Tensor:
    """Weight of each epoch 1..max_epoch: the normal density N(e; mean, std), normalised to sum 1 (float64)."""
    if std <= 0:
        raise ConfigError(f"TRAINER.PROMPTSRC.GPA_STD must be > 0; got {std}")
    if max_epoch < 1:
        raise ConfigError(f"OPTIM.MAX_EPOCH must be >= 1 for PromptSRC's prompt aggregation; got {max_epoch}")
    epochs = torch.arange(1, max_epoch + 1, dtype=torch.float64)
    density = torch.exp(-0.5 * ((epochs - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    total = density.sum()
    if not total > 0:
        raise ConfigError(f"TRAINER.PROMPTSRC.GPA_MEAN {mean} / GPA_STD {std} give every epoch 1..{max_epoch} a "
                         "zero weight; put GPA_MEAN within the epochs or widen GPA_STD")
    return density / total


class GaussianPromptAggregation(nn.Module):
    """Running sum over epochs of weight(epoch) * the prompt learner's parameters, in fp32 buffers.

    Buffers (saved in checkpoints): one sum per parameter (its name with "." -> "_") and `epochs_done`,
    the number of epochs aggregated so far. A resumed run continues the sum; a checkpoint without this
    state (e.g. saved by another trainer) is refused instead of silently dropping epochs.
    """

    def __init__(self, prompt_learner: nn.Module, weights: torch.Tensor):
        super().__init__()
        self.weights = tuple(weights.tolist())  # derived from the config, so not saved
        self.register_buffer("epochs_done", torch.zeros((), dtype=torch.long))
        for name, param in prompt_learner.named_parameters():
            self.register_buffer(self._buffer_name(name), torch.zeros_like(param, dtype=torch.float32))

    @staticmethod
    def _buffer_name(param_name: str) -> str:
        return "sum_" + param_name.replace(".", "_")

    @torch.no_grad()
    def accumulate(self, prompt_learner: nn.Module, epoch: int) -> None:
        """Add the parameters at the end of `epoch` (0-based) with that epoch's weight."""
        done = int(self.epochs_done)
        if done != epoch:
            raise RuntimeError(
                f"PromptSRC's prompt aggregation holds {done} epoch(s) but epoch {epoch + 1} just finished: the run "
                f"was resumed from a checkpoint without the aggregation state (gpa.*); retrain from scratch")
        weight = self.weights[epoch]
        for name, param in prompt_learner.named_parameters():
            getattr(self, self._buffer_name(name)).add_(param.detach().float(), alpha=weight)
        self.epochs_done.add_(1)

    @torch.no_grad()
    def load_into(self, prompt_learner: nn.Module) -> None:
        """Replace the parameters by the aggregated ones."""
        for name, param in prompt_learner.named_parameters():
            param.copy_(getattr(self, self._buffer_name(name)))


# --------------------------------------------------------------------------------------------------------
# Model and losses


class PromptSRCOutputs(NamedTuple):
    """Everything the PromptSRC loss needs from one training batch (features L2-normalised, fp32)."""

    logits: torch.Tensor  # [B, C] prompted
    text_features: torch.Tensor  # [C, E] prompted
    image_features: torch.Tensor  # [B, E] prompted
    teacher_logits: torch.Tensor  # [B, C] frozen CLIP
    teacher_text_features: torch.Tensor  # [C, E] template ensemble
    teacher_image_features: torch.Tensor  # [B, E] frozen CLIP, no prompts


def teacher_text_features(clip_model: nn.Module, classnames: Sequence[str], options: SpeedOptions) -> torch.Tensor:
    """[C, E] normalised mean of the raw 60-template features, computed in fp32 like the official teacher."""
    return fp32_template_features(clip_model, classnames, PROMPTSRC_TEMPLATES, options, normalize_each=False)


class PromptSRCCLIP(PromptedCLIP):
    """IVLP's prompted CLIP plus the frozen-CLIP teacher and the aggregation state.

    forward(image) gives the prompted logits (evaluation, with the image-independent cache);
    forward(image, with_teacher=True) gives `PromptSRCOutputs` for the training loss.
    """

    def __init__(self, clip_model: nn.Module, prompt_learner: VLPromptLearner, options: SpeedOptions,
                 classnames: Sequence[str], gpa_epoch_weights: torch.Tensor):
        super().__init__(clip_model, prompt_learner, options)
        self.classnames = list(classnames)
        self.gpa = GaussianPromptAggregation(prompt_learner, gpa_epoch_weights)
        self.register_buffer("teacher_text", None, persistent=False)

    def forward(self, image: torch.Tensor, with_teacher: bool = False):
        if not with_teacher:
            return super().forward(image)
        if self.teacher_text is None:
            # before the student forward: its temporary fp32 CLIP copy and 60-template encode then never sit on
            # top of the student's activations (the peak memory of the first step)
            self.teacher_text = teacher_text_features(self.clip_model, self.classnames, self.options)
        image_features, text_features = self.features(image)
        scale = self.logit_scale()
        with torch.no_grad(), fused_attention(self.options.fused_attention):
            teacher_image = l2_normalize(self.clip_model.encode_image(image))
        # The official teacher logits use the fp16-rounded text features (`half()`): round through CLIP's dtype.
        teacher_logits = cosine_logits(scale, teacher_image, self.teacher_text.to(self.dtype))
        return PromptSRCOutputs(cosine_logits(scale, image_features, text_features), text_features, image_features,
                                teacher_logits, self.teacher_text, teacher_image)


class PromptSRCLoss(NamedTuple):
    total: torch.Tensor
    ce: torch.Tensor
    kl: torch.Tensor
    text: torch.Tensor
    image: torch.Tensor


def promptsrc_loss(outputs: PromptSRCOutputs, label: torch.Tensor, text_weight: float,
                   image_weight: float) -> PromptSRCLoss:
    """L = CE(z, y) + KL(teacher || student) + text_weight * L1(t, t0) + image_weight * L1(v, v0).

    L1 terms are means over all elements; the KL is summed over batch and classes and divided by the number
    of logits B*C (the official reduction), at temperature 1 on the already-scaled logits.
    """
    ce = F.cross_entropy(outputs.logits, label)
    kl = F.kl_div(F.log_softmax(outputs.logits, dim=1), F.log_softmax(outputs.teacher_logits, dim=1),
                  reduction="sum", log_target=True) / outputs.logits.numel()
    text = text_weight * F.l1_loss(outputs.text_features, outputs.teacher_text_features)
    image = image_weight * F.l1_loss(outputs.image_features, outputs.teacher_image_features)
    return PromptSRCLoss(ce + kl + text + image, ce, kl, text, image)


# --------------------------------------------------------------------------------------------------------
# Trainer


@TRAINER_REGISTRY.register()
class PromptSRC(PromptTrainer):
    METHOD_KEY = "PROMPTSRC"
    MODEL_NAME = "VLPromptLearner"
    # The official PromptSRC xd scripts name an "ep5" file that does not exist (PROTOCOL §8 item 27).
    SPEC = MethodSpec(default_config="vit_b16_c2_ep20_batch4_4+4ctx",
                      protocol_configs={"xd": "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets",
                                        "fewshot": "vit_b16_c2_ep50_batch4_4+4ctx_few_shot"})

    def build_custom_clip(self, clip_model: nn.Module, classnames: Sequence[str]) -> PromptedCLIP:
        node = self.method_cfg
        learner = VLPromptLearner(self.cfg, classnames, clip_model, method=self.METHOD_KEY)
        weights = gpa_weights(node.GPA_MEAN, node.GPA_STD, self.cfg.OPTIM.MAX_EPOCH)
        return PromptSRCCLIP(clip_model, learner, SpeedOptions.from_cfg(self.cfg), classnames, weights)

    def training_loss(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model(image, with_teacher=True)
        node = self.method_cfg
        return promptsrc_loss(outputs, label, node.TEXT_LOSS_WEIGHT, node.IMAGE_LOSS_WEIGHT).total, outputs.logits

    def after_epoch(self) -> None:
        # Aggregate before the epoch's checkpoint is written, so it holds the updated sum and, after the last
        # epoch, the aggregated prompts that the final test uses (as in the official trainer).
        model = self.model
        model.gpa.accumulate(model.prompt_learner, self.epoch)
        if self.epoch + 1 == self.max_epoch:
            print("Using GPA model for final inference...")
            model.gpa.load_into(model.prompt_learner)
        super().after_epoch()
