"""TCP (Yao et al., CVPR 2024, "TCP: Textual-based Class-aware Prompt tuning for Visual-Language Model"): CoOp's
learned context plus class-aware prompt tokens that a small meta-net (the "Textual Knowledge Embedding")
computes from each class name's hand-written prompt features; they replace the context positions inside the
text encoder, so every class gets a classifier of its own that follows its name, for unseen classes too.
Trained with KgCoOp's loss: cross-entropy plus W times the distance to the hand-written prompts' features
(computed as the official call computes it, see `knowledge_distance`).

Facts of the official trainer (htyao89/Textual-based_Class-aware_prompt_tuning, trainers/tcp.py, its forked
clip in trainers/clip_text/model.py, configs/trainers/TCP/vit_b16_ep100_ctxv1.yaml and scripts/base2new_train.sh,
at bd97bec):
- knowledge: the class names' features under a per-dataset hand-written template (`KNOWLEDGE_TEMPLATES`, its
  CUSTOM_TEMPLATES_ori), computed by a second CLIP with OpenAI's fp16 weights whatever PREC and normalised once
  in fp16 (KgCoOp's `fp16_text_features`); the same tensor is the meta-net's input and, normalised again, the
  reference of the distance;
- meta-net: linear1 (E -> E // 4, E the feature width), QuickGELU, linear2 (-> 4 x text width); its output,
  reshaped to [classes, 4, width], replaces the token positions 1..4 at the input of text block 8 (0-based:
  eight blocks run before it; its blend weight is 1.0, i.e. a replacement);
- the learned prompts are its CUSTOM_TEMPLATES "X X X X <the dataset's words around the name>" with the four X
  replaced by `ctx` (random normal(0.02) init: the config's CTX_INIT False); `PROMPT_TEMPLATES` are the words
  after those four positions (the name's position is the template's, whatever CLASS_TOKEN_POSITION);
- loss = CE(logits, label) + 8.0 x (1 - mean_c cos(t_c, t0_c)) (8.0 written in the file; its TRAINER.COOP.W,
  1.0 in the scripts, reaches the forked block and is overwritten there by the hard-coded weight 1.0);
  logits = logit_scale.exp() x normalised image @ normalised text features;
- trained: `ctx` and `meta_net` (the whole prompt learner, registered as `prompt_learner`); Adam, LR 0.002,
  eps 1e-3 (its README: set in its Dassl copy, fp16 parameters give NaNs otherwise), 50 epochs (25 for ImageNet
  and SUN397, forced in its train.py), cosine, 1 constant warm-up epoch at 1e-5, batch 32, N_CTX 4, 16 shots;
- at test time the meta-net runs on the test classes' knowledge: base-class weights give novel-class prompts.

Deviations, none of which changes the method: the meta-net and the context are fp32 master tensors (the official
file makes the meta-net fp16 when TRAINER.COCOOP.PREC is fp16, its default, even under COOP.PREC fp32, and steps
fp16 parameters); logits and the distance are fp32; the class-aware prompt has N_CTX tokens (the official
writes 4, its N_CTX) and its layer is TRAINER.TCP.PROMPT_LAYER (default 8, the official one; backbones with
fewer layers need a smaller one); `amp` and `bf16` train (the official amp branch fails: in training mode
its model needs the label); a dataset without a template uses "a photo of a {}." and the context followed by
"{}." (the official raises a KeyError). Its checkpoints load (the same parameter names).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn
from yacs.config import CfgNode as CN

from clip.model import QuickGELU
from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY

from .common import (PromptedCLIP, SpeedOptions, TextPromptLearner, cosine_logits, init_text_context,
                     round_to_dtype_)
from .kgcoop import KgCoOp, class_texts, fp16_normalize, fp16_text_features
from .method import MethodSpec

# The hand-written prompts whose features feed the meta-net and anchor the distance (official CUSTOM_TEMPLATES_ori;
# FGVCAircraft and Food101 differ from KgCoOp's table).
KNOWLEDGE_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of an aircraft {}.",
    "DescribableTextures": "a photo of a {}, a type of texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of a {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}

# What follows the four context tokens in the official learner's prompts (its CUSTOM_TEMPLATES without their first
# four words, which `ctx` replaces: "X X X X" or, for UCF101 and the ImageNets, "a photo of a"). CLIP's tokenizer
# splits on words first, so the tokens after the context are the official ones.
PROMPT_TEMPLATES = {
    "OxfordPets": "{}, a type of pet.",
    "OxfordFlowers": "{}, a type of flower.",
    "FGVCAircraft": "{}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "{}.",
    "StanfordCars": "{}, a type of car",  # no full stop in the official template
    "Food101": "{}, a type of food.",
    "SUN397": "{}.",
    "Caltech101": "{}.",
    "UCF101": "person doing {}.",
    "ImageNet": "{}.",
    "ImageNetSketch": "{}.",
    "ImageNetV2": "{}.",
    "ImageNetA": "{}.",
    "ImageNetR": "{}.",
}
DEFAULT_PROMPT_TEMPLATE = "{}."


def check_prompt_layer(layer: int, clip_model: nn.Module, key: str) -> None:
    """The class-aware prompt enters at the input of a text block after the first: 1 .. layers - 1."""
    layers = clip_model.transformer.layers
    if not 1 <= layer <= layers - 1:
        raise ConfigError(f"{key} must be between 1 and {layers - 1} (the class-aware prompt replaces the context at "
                          f"the input of that text block; the backbone has {layers}); got {layer}")


class ClassAwarePromptLearner(TextPromptLearner):
    """`ctx` (CoOp's context at the input) and `meta_net` (official names): meta_net(knowledge) gives each class
    N_CTX tokens that replace the context positions at the input of text block `prompt_layer`.

    `class_knowledge` [n_cls, E]: the hand-written prompts' features (normalised once, fp16 values in fp32), a
    non-persistent buffer rebuilt from the current class names (what makes base -> novel work)."""

    def __init__(self, cfg, classnames: Sequence[str], clip_model: nn.Module, class_knowledge: torch.Tensor):
        node = cfg.TRAINER.TCP
        check_prompt_layer(node.PROMPT_LAYER, clip_model, "TRAINER.TCP.PROMPT_LAYER")
        # The official order of draws from the global RNG: the context first, then the meta-net's layers.
        ctx, prefix, n_ctx = init_text_context(clip_model, node.N_CTX, node.CTX_INIT, derive_n_ctx=True)
        print(f'Initial context: "{prefix}"')
        print(f"Number of context words (tokens): {n_ctx}")
        feature_width = class_knowledge.shape[-1]
        width = clip_model.ln_final.weight.shape[0]
        if feature_width < 4:
            raise ConfigError(f"TCP's meta-net needs a feature width of at least 4 (hidden width E // 4); the "
                              f"backbone's is {feature_width}")
        meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(feature_width, feature_width // 4)),
            ("gelu", QuickGELU()),
            ("linear2", nn.Linear(feature_width // 4, n_ctx * width)),
        ]))
        template = PROMPT_TEMPLATES.get(cfg.DATASET.NAME, DEFAULT_PROMPT_TEMPLATE)
        super().__init__(clip_model, classnames, ctx, prefix, n_ctx, class_template=template)
        # The official file casts the meta-net to fp16 under fp16: same initial values here, trained in fp32.
        self.meta_net = round_to_dtype_(meta_net, clip_model.dtype)
        self.register_buffer("class_knowledge", class_knowledge.float(), persistent=False)
        self.prompt_layer = node.PROMPT_LAYER

    def class_aware_prompts(self) -> torch.Tensor:
        """[n_cls, n_ctx, width]: the meta-net's output per class, split into tokens."""
        tokens = self.meta_net(self.class_knowledge.to(self.ctx.dtype))
        return tokens.reshape(self.n_cls, self.n_ctx, -1)

    def deep_text_prompts(self) -> list[torch.Tensor]:
        # One entry per block 1 ..; an entry of no tokens leaves that block's input as it is, so only block
        # `prompt_layer` has its context positions replaced.
        prompts = self.class_aware_prompts()
        untouched = prompts.new_zeros(0, prompts.shape[-1])
        return [untouched] * (self.prompt_layer - 1) + [prompts]


def knowledge_distance(text_features: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """1 - mean_c cos(t_c, t0_c) as the official call computes it: torch's cosine_similarity divides each input by
    its norm in that input's own dtype, so the fp16 reference is normalised in fp16 (`reference` is that already)
    and not again in fp32; the fp32 features are. (KgCoOp's fp32 cosine renormalises the reference: 1e-5 of the
    loss apart, measured.) Computed in fp32 with autocast off."""
    with torch.autocast(text_features.device.type, enabled=False):
        text = text_features.float()
        text = text / text.norm(dim=1, keepdim=True).clamp_min(1e-7)  # the official eps
        return 1.0 - (text * reference.float()).sum(dim=1).mean()


class TCPCLIP(PromptedCLIP):
    """The prompted CLIP of the class-aware prompt learner; forward(image, with_distance=True) also gives the
    knowledge-guided distance, whose reference is the learner's knowledge normalised twice more in fp16 (the
    official forward, then its cosine_similarity: see `knowledge_distance`)."""

    def __init__(self, clip_model: nn.Module, prompt_learner: ClassAwarePromptLearner, options: SpeedOptions):
        super().__init__(clip_model, prompt_learner, options)
        reference = fp16_normalize(fp16_normalize(prompt_learner.class_knowledge))
        self.register_buffer("reference_features", reference, persistent=False)  # rebuilt from the class names

    def forward(self, image: torch.Tensor, with_distance: bool = False):
        image_features, text_features = self.features(image)
        logits = cosine_logits(self.logit_scale(), image_features, text_features)
        if not with_distance:
            return logits
        return logits, knowledge_distance(text_features, self.reference_features)


@TRAINER_REGISTRY.register()
class TCP(KgCoOp):
    """KgCoOp's loss and checkpoint layout (`prompt_learner`) with TCP's class-aware prompt learner."""

    METHOD_KEY = "TCP"
    SPEC = MethodSpec(default_config="vit_b16_ep100_ctxv1")

    @staticmethod
    def extend_cfg(cfg) -> None:
        # the official keys (its TRAINER.COOP node) that TCP reads, under its own node
        cfg.TRAINER.TCP = CN()
        cfg.TRAINER.TCP.N_CTX = 4
        cfg.TRAINER.TCP.CTX_INIT = ""  # the official config's False: random context
        cfg.TRAINER.TCP.PREC = "fp16"
        cfg.TRAINER.TCP.W = 8.0  # weight of the knowledge-guided distance (written in the official file)
        cfg.TRAINER.TCP.PROMPT_LAYER = 8  # text block whose input takes the class-aware prompt (official: 8)

    def build_custom_clip(self, clip_model: nn.Module, classnames: Sequence[str]) -> PromptedCLIP:
        options = SpeedOptions.from_cfg(self.cfg)
        texts = class_texts(KNOWLEDGE_TEMPLATES, self.cfg.DATASET.NAME, classnames)
        print(f"Hand-written prompts: {texts}")
        knowledge = fp16_text_features(clip_model, texts, options)
        learner = ClassAwarePromptLearner(self.cfg, classnames, clip_model, knowledge)
        return TCPCLIP(clip_model, learner, options)
