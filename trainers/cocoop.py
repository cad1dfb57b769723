"""CoCoOp (Zhou et al., CVPR 2022): the context is shifted per image by a small meta-net of its features."""
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn

from clip.model import fused_attention
from dassl.engine import TRAINER_REGISTRY

from .common import (PromptedCLIP, PromptTrainer, SpeedOptions, TextPromptLearner, cosine_logits,
                     init_text_context, l2_normalize, round_to_dtype_)
from .method import MethodSpec


class PromptLearner(TextPromptLearner):
    """`ctx` plus `meta_net` (linear1: vis_dim -> vis_dim // 16, ReLU, linear2: -> text width), official names."""

    def __init__(self, cfg, classnames: Sequence[str], clip_model: nn.Module):
        node = cfg.TRAINER.COCOOP
        ctx, prefix, n_ctx = init_text_context(clip_model, node.N_CTX, node.CTX_INIT, derive_n_ctx=True)
        print(f'Initial context: "{prefix}"')
        print(f"Number of context words (tokens): {n_ctx}")
        vis_dim = clip_model.visual.output_dim
        width = clip_model.ln_final.weight.shape[0]
        super().__init__(clip_model, classnames, ctx, prefix, n_ctx)
        meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, vis_dim // 16)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(vis_dim // 16, width)),
        ]))
        # The official code casts the meta-net to CLIP's dtype: same initial values, trained in fp32 here.
        self.meta_net = round_to_dtype_(meta_net, clip_model.dtype)

    def image_prompts(self, image_features: torch.Tensor) -> torch.Tensor:
        """Prompts [B * n_cls, 77, width] for every (image, class) pair: ctx + meta_net(image features)."""
        bias = self.meta_net(image_features.to(self.ctx.dtype)).unsqueeze(1)
        prefix, suffix = self.token_prefix, self.token_suffix
        ctx = (self.ctx.unsqueeze(0) + bias).to(prefix.dtype)  # [B, n_ctx, width]
        batch = ctx.shape[0]
        prompts = torch.cat([
            prefix.unsqueeze(0).expand(batch, -1, -1, -1),
            ctx.unsqueeze(1).expand(-1, self.n_cls, -1, -1),
            suffix.unsqueeze(0).expand(batch, -1, -1, -1),
        ], dim=2)
        return prompts.flatten(0, 1)


class CoCoOpCLIP(PromptedCLIP):
    """Image-conditioned prompts: B text-encoder passes over the classes per batch, so no evaluation cache;
    at evaluation images are grouped so that one text-encoder call holds about TRAINER.EVAL_TEXT_CHUNK prompts."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        learner = self.prompt_learner
        with fused_attention(self.options.fused_attention):
            image_features = l2_normalize(self.clip_model.encode_image(image))
            group = max(1, self.options.chunk_size(len(image) * learner.n_cls) // learner.n_cls)
            logits = []
            every_class = slice(0, learner.n_cls)
            for feats in image_features.split(group):
                prompts = learner.image_prompts(feats)
                eot = learner.eot_indices.repeat(len(feats))
                # The context of image b is shared by its n_cls prompts: one prefix per image.
                plan = learner.text_plan(every_class, self.options, [], prefix_groups=len(feats))
                text = self.clip_model.encode_text_embeddings(prompts, eot, plan=plan)
                text = l2_normalize(text).view(len(feats), learner.n_cls, -1)
                logits.append(cosine_logits(self.logit_scale(), feats, text))
        return torch.cat(logits)


@TRAINER_REGISTRY.register()
class CoCoOp(PromptTrainer):
    METHOD_KEY = "COCOOP"
    MODEL_NAME = "prompt_learner"
    REGISTER_PROMPT_LEARNER = True
    SPEC = MethodSpec(default_config="vit_b16_c4_ep10_batch1_ctxv1")

    def build_custom_clip(self, clip_model: nn.Module, classnames: Sequence[str]) -> PromptedCLIP:
        learner = PromptLearner(self.cfg, classnames, clip_model)
        return CoCoOpCLIP(clip_model, learner, SpeedOptions.from_cfg(self.cfg))
