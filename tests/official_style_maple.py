"""A MaPLe trainer written the way the official MaPLe repository's `trainers/maple.py` is written: a
`design_details` dict for `clip.build_model`, a text encoder that drives CLIP's transformer with the
[x, deep_prompts, counter] list, the vision encoder called as `visual(image, shared_ctx, deep_prompts)`, a
CustomCLIP that returns the loss in training mode, the "VPT"-in-name freezing rule and an optimizer over the
whole model. tests/test_official_style_maple_family.py checks that it gives the logits of trainers/maple.py.

Registered as `OfficialStyleMaPLe`; configured by TRAINER.MAPLE.*. Two details differ from the official
file so that it runs on any ViT and in fp32: the text and vision widths are read from the model (the
official file writes ViT-B/16's 512 and 768), and `proj` takes CLIP's dtype (the official `proj.half()` makes
PREC fp32 fail there).
"""
import copy

import torch
import torch.nn as nn
from torch.nn import functional as F

from dassl.engine import TRAINER_REGISTRY
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import load_pretrained_weights

from clip import clip
import official_style_coop
from official_style_coop import OfficialStyleCoOp, load_clip_to_cpu


def _get_clones(module, n):
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


class TextEncoder(official_style_coop.TextEncoder):
    def forward(self, prompts, tokenized_prompts, compound_prompts_deeper_text):
        x = (prompts + self.positional_embedding.type(self.dtype)).permute(1, 0, 2)
        # the list form carries the deep prompts through the blocks; the counter starts at 0
        outputs = self.transformer([x, compound_prompts_deeper_text, 0])
        x = self.ln_final(outputs[0].permute(1, 0, 2)).type(self.dtype)
        return x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ self.text_projection


class ContextPromptLearner(nn.Module):
    """The text side the MaPLe and IVLP files share: n_ctx learned tokens after SOS, initialised from the
    first n_ctx words of CTX_INIT when n_ctx <= 4 (the prefix string is the whole phrase), else random."""

    def __init__(self, classnames, clip_model, n_ctx, ctx_init, imsize, prompts=None):
        # prompts: the full texts whose positions 1..n_ctx the context replaces (TCP's templates); by default the
        # prefix, the class name and a full stop
        super().__init__()
        dtype = clip_model.dtype
        ctx_dim = clip_model.ln_final.weight.shape[0]
        assert imsize == clip_model.visual.input_resolution, "cfg_imsize must equal the backbone's resolution"

        if ctx_init and n_ctx <= 4:
            ctx_init = ctx_init.replace("_", " ")
            prompt = clip.tokenize(ctx_init)
            with torch.no_grad():
                embedding = clip_model.token_embedding(prompt).type(dtype)
            ctx_vectors = embedding[0, 1: 1 + n_ctx, :]
            prompt_prefix = ctx_init
        else:
            ctx_vectors = torch.empty(n_ctx, ctx_dim, dtype=dtype)
            nn.init.normal_(ctx_vectors, std=0.02)
            prompt_prefix = " ".join(["X"] * n_ctx)
        print(f'Initial context: "{prompt_prefix}"')
        print(f"Number of context words (tokens): {n_ctx}")
        self.ctx = nn.Parameter(ctx_vectors)
        self.register_class_tokens(classnames, clip_model, prompt_prefix, n_ctx, prompts)

    def register_class_tokens(self, classnames, clip_model, prompt_prefix, n_ctx, prompts=None):
        """The fixed tokens around the context of the prompts "<prompt_prefix> <class name>." (ProGrad's
        style file builds its own context, then these)."""
        dtype = clip_model.dtype
        classnames = [name.replace("_", " ") for name in classnames]
        prompts = prompts or [prompt_prefix + " " + name + "." for name in classnames]
        tokenized_prompts = torch.cat([clip.tokenize(p) for p in prompts])
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokenized_prompts).type(dtype)
        self.register_buffer("token_prefix", embedding[:, :1, :])  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :])  # class name, ".", EOT
        self.n_cls = len(classnames)
        self.n_ctx = n_ctx
        self.tokenized_prompts = tokenized_prompts

    def text_prompts(self):
        ctx = self.ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)


class MultiModalPromptLearner(ContextPromptLearner):
    def __init__(self, cfg, classnames, clip_model):
        maple = cfg.TRAINER.MAPLE
        assert maple.PROMPT_DEPTH >= 1, "For MaPLe, PROMPT_DEPTH should be >= 1"
        print("MaPLe design: Multi-modal Prompt Learning")
        super().__init__(classnames, clip_model, maple.N_CTX, maple.CTX_INIT, cfg.INPUT.SIZE[0])
        ctx_dim = clip_model.ln_final.weight.shape[0]
        vis_dim = clip_model.visual.conv1.weight.shape[0]
        self.proj = nn.Linear(ctx_dim, vis_dim).to(clip_model.dtype)
        self.compound_prompts_text = nn.ParameterList(
            [nn.Parameter(torch.empty(maple.N_CTX, ctx_dim)) for _ in range(maple.PROMPT_DEPTH - 1)])
        for single_para in self.compound_prompts_text:
            nn.init.normal_(single_para, std=0.02)
        single_layer = nn.Linear(ctx_dim, vis_dim)
        self.compound_prompt_projections = _get_clones(single_layer, maple.PROMPT_DEPTH - 1)

    def forward(self):
        visual_deep_prompts = [layer(self.compound_prompts_text[index])
                               for index, layer in enumerate(self.compound_prompt_projections)]
        return self.text_prompts(), self.proj(self.ctx), self.compound_prompts_text, visual_deep_prompts


def logits_or_loss(image_features, text_features, logit_scale, label=None):
    """Cosine logits; with a label (training) the cross-entropy loss instead, as the official forwards do."""
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    logits = logit_scale.exp() * image_features @ text_features.t()
    return logits if label is None else F.cross_entropy(logits, label)


class CustomCLIP(official_style_coop.CustomCLIP):
    prompt_learner_class = MultiModalPromptLearner
    text_encoder_class = TextEncoder

    def forward(self, image, label=None):
        prompts, shared_ctx, deep_compound_prompts_text, deep_compound_prompts_vision = self.prompt_learner()
        text_features = self.text_encoder(prompts, self.tokenized_prompts, deep_compound_prompts_text)
        image_features = self.image_encoder(image.type(self.dtype), shared_ctx, deep_compound_prompts_vision)
        return logits_or_loss(image_features, text_features, self.logit_scale,
                              label if self.prompt_learner.training else None)


@TRAINER_REGISTRY.register()
class OfficialStyleMaPLe(OfficialStyleCoOp):
    """Multi-modal Prompt Learning (Khattak et al., CVPR 2023) in the official file's shape; parse_batch_train
    and load_model (which drops the class-name buffers) come from the CoOp-style file."""

    REGISTERED_NAME = "MultiModalPromptLearner"
    CONFIG_NODE = "MAPLE"  # TRAINER.<CONFIG_NODE>.PREC

    def precision(self):
        return self.cfg.TRAINER[self.CONFIG_NODE].PREC

    def check_cfg(self, cfg):
        assert cfg.TRAINER[self.CONFIG_NODE].PREC in ["fp16", "fp32", "amp"]

    def design_details(self):
        return {"trainer": "MaPLe", "vision_depth": 0, "language_depth": 0, "vision_ctx": 0, "language_ctx": 0,
                "maple_length": self.cfg.TRAINER.MAPLE.N_CTX}

    def load_backbone(self):
        return load_clip_to_cpu(self.cfg, self.design_details())

    def build_custom_clip(self, classnames, clip_model):
        return CustomCLIP(self.cfg, classnames, clip_model)

    def build_model(self):
        cfg = self.cfg
        classnames = self.dm.dataset.classnames

        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
        clip_model = self.load_backbone()
        if self.precision() == "fp32" or self.precision() == "amp":
            clip_model.float()

        print("Building custom CLIP")
        self.model = self.build_custom_clip(classnames, clip_model)

        print("Turning off gradients in both the image and the text encoder")
        for name, param in self.model.named_parameters():
            # prompts that live inside CLIP (IVLP / VPT designs) are named VPT and stay trainable
            param.requires_grad_("prompt_learner" in name or "VPT" in name)
        enabled = {name for name, param in self.model.named_parameters() if param.requires_grad}
        print(f"Parameters to be updated: {enabled}")

        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(self.model, cfg.MODEL.INIT_WEIGHTS)
        self.model.to(self.device)
        self.optim = build_optimizer(self.model, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model(self.REGISTERED_NAME, self.model, self.optim, self.sched)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision() == "amp" else None

    def loss(self, image, label):
        return self.model(image, label)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        if self.precision() == "amp":
            with torch.autocast(self.device.type):
                loss = self.loss(image, label)
            self.optim.zero_grad()
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            loss = self.loss(image, label)
            self.optim.zero_grad()
            loss.backward()
            self.optim.step()

        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item()}
