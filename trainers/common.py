"""The pieces every prompt-learning trainer shares, in one place so each trainer file only says what is
particular to its method:

- backbone loading (`MODEL.BACKBONE.NAME` / `.PATH` / `.CACHE_DIR`) and the precision modes (`Precision`);
- text context initialisation from `CTX_INIT` (CoOp/CoCoOp re-derive N_CTX from the phrase, MaPLe/IVLP keep
  N_CTX and use the phrase only when N_CTX <= 4) and the class-name token buffers (`TextPromptLearner`);
- `PromptedCLIP`: the frozen CLIP plus a prompt learner, with the evaluation cache of image-independent
  class features and vision prompts, and chunked text encoding at evaluation;
- `PromptTrainer`: build_model (freezing verified), the forward_backward skeleton and a `load_model` that
  drops the class-name buffers (base -> novel) and accepts the official checkpoints.

Prompt parameters are always fp32 "master" tensors; they are cast to the activation dtype where they enter
the frozen CLIP (clip/ does that at every insertion point).
"""
from __future__ import annotations

import contextlib
import copy
import re
from dataclasses import dataclass
from itertools import chain
from typing import ContextManager, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from clip import clip
from clip.model import fused_attention
from clip.simple_tokenizer import SimpleTokenizer
from clip.text_plan import TextPlan, leading_shared_positions, learned_end, plan_text
from dassl.config import ConfigError
from dassl.engine import TrainerX
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import load_pretrained_weights
from dassl.utils.errors import InputError

from .method import PRECISIONS, MethodSpec, freeze_all_but_trained, spec_of, trained_parameter_count

_tokenizer = SimpleTokenizer()


# --------------------------------------------------------------------------------------------------------
# Precision


def check_precision(name: str, key: str, supported: Sequence[str] = PRECISIONS) -> None:
    """Raise a ConfigError naming the config key and the valid choices when `name` is not a mode the method
    supports (its MethodSpec.precisions)."""
    if name not in supported:
        raise ConfigError(f"{key} must be one of {', '.join(supported)}; got {name!r}")


class Precision:
    """One of the precision modes of a trainer.

    fp32: everything in fp32. fp16: the frozen CLIP keeps OpenAI's half-precision weights, the prompts stay
    fp32 master tensors cast to fp16 where they enter CLIP (the official code trains fp16 prompts directly,
    which is NaN-prone). amp: fp32 weights, autocast to fp16, loss scaled by a GradScaler. bf16: fp32
    weights, autocast to bf16 (no scaler needed: bf16 has fp32's exponent range).
    """

    def __init__(self, name: str, device: torch.device, key: str = "PREC"):
        check_precision(name, key)
        self.name = name
        self.device_type = torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type) if name == "amp" else None

    def prepare(self, clip_model: nn.Module) -> nn.Module:
        """`clip.build_model` returns OpenAI's fp16 weights; every mode but fp16 computes from fp32 weights."""
        return clip_model if self.name == "fp16" else clip_model.float()

    def autocast(self) -> ContextManager:
        if self.name == "amp":
            return torch.autocast(self.device_type, dtype=torch.float16)
        if self.name == "bf16":
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad()
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()


# --------------------------------------------------------------------------------------------------------
# Backbone


def load_backbone_state_dict(cfg) -> dict:
    """The state dict of the CLIP named by MODEL.BACKBONE (an OpenAI name, downloaded and verified by clip/, or
    the local checkpoint MODEL.BACKBONE.PATH), as stored (OpenAI's fp16 weights stay fp16)."""
    backbone = cfg.MODEL.BACKBONE
    source = f", file: {backbone.PATH}" if backbone.PATH else ""
    print(f"Loading CLIP (backbone: {backbone.NAME}{source})")
    try:
        return clip.load_state_dict(backbone.NAME, path=backbone.PATH, download_root=backbone.CACHE_DIR or None)
    except (ValueError, RuntimeError) as e:
        # clip/ stays independent of dassl: its errors about the named model or file become the config's
        raise ConfigError(f"MODEL.BACKBONE (NAME {backbone.NAME!r}, PATH {backbone.PATH!r}): {e}") from e


def load_clip_model(cfg, precision: Precision) -> nn.Module:
    """The frozen CLIP named by MODEL.BACKBONE, with weights in the dtype `precision` computes from."""
    state_dict = load_backbone_state_dict(cfg)
    if clip.is_openclip_name(cfg.MODEL.BACKBONE.NAME):
        print(f"Image normalisation: mean {list(cfg.INPUT.PIXEL_MEAN)}, std {list(cfg.INPUT.PIXEL_STD)} "
              f"(INPUT.PIXEL_STATS {cfg.INPUT.PIXEL_STATS}: "
              + ("the backbone's own)" if cfg.INPUT.PIXEL_STATS == "backbone" else "the config's values)"))
    # Built in the dtype it computes from: an fp32 file keeps its exact values outside the fp16 mode.
    return precision.prepare(clip.build_model(state_dict, half=precision.name == "fp16"))


def apply_model_switches(clip_model: nn.Module, cfg) -> None:
    """The off-by-default switches that trade compile time or recomputation for speed or memory:
    TRAINER.SPEEDUPS.TEXT_CHECKPOINTING (text encoder) and TRAINER.SPEEDUPS.COMPILE (both towers)."""
    speedups = cfg.TRAINER.SPEEDUPS
    clip_model.transformer.checkpointing = speedups.TEXT_CHECKPOINTING
    if speedups.COMPILE:
        clip_model.transformer.compile_blocks()
        if hasattr(clip_model.visual, "transformer"):  # a ModifiedResNet has no transformer blocks
            clip_model.visual.transformer.compile_blocks()


def check_input_size(cfg, clip_model: nn.Module) -> None:
    resolution = clip_model.visual.input_resolution
    if cfg.INPUT.SIZE[0] != resolution:
        raise ConfigError(
            f"INPUT.SIZE {tuple(cfg.INPUT.SIZE)} does not match the input resolution {resolution} of the backbone "
            f"{cfg.MODEL.BACKBONE.NAME!r}; set INPUT.SIZE ({resolution}, {resolution})"
        )


def vision_width(clip_model: nn.Module, method: str) -> int:
    """Hidden width of the vision transformer; a clear error for ResNet backbones, which take no prompts."""
    visual = clip_model.visual
    if not hasattr(visual, "class_embedding"):
        raise ConfigError(
            f"{method} puts prompts into the vision transformer and needs a ViT backbone (e.g. ViT-B/16); "
            f"the loaded backbone is a ModifiedResNet ({type(visual).__name__})"
        )
    return visual.class_embedding.shape[-1]


def check_prompt_counts(node, prefix: str) -> None:
    """Every N_CTX* (prompt tokens) and PROMPT_DEPTH* (prompted layers) key of a method node is an integer >= 1;
    the vision side may be 0, which turns vision prompting off (the IVLP "language only" ablation). The upper
    bounds depend on the backbone and are checked when the prompts are built."""
    for key in sorted(node):
        if key.startswith(("N_CTX", "PROMPT_DEPTH")):
            minimum = 0 if key.endswith("_VISION") else 1
            if node[key] < minimum:
                raise ConfigError(f"{prefix}.{key} must be >= {minimum}; got {node[key]}")


def check_depth(depth: int, layers: int, key: str) -> None:
    if not 1 <= depth <= layers:
        raise ConfigError(f"{key} must be between 1 and {layers} (the backbone's number of layers); got {depth}")


# --------------------------------------------------------------------------------------------------------
# Prompt parameters


def init_text_context(
    clip_model: nn.Module, n_ctx: int, ctx_init: str, derive_n_ctx: bool, n_cls_specific: int = 0
) -> tuple[nn.Parameter, str, int]:
    """Learnable text context vectors, the prompt prefix string and the number of context tokens.

    With `derive_n_ctx` (CoOp, CoCoOp) a non-empty CTX_INIT sets n_ctx to its number of words. Otherwise
    (MaPLe, IVLP) the phrase is used only when n_ctx <= 4 and n_ctx stays as configured: the context is
    the embeddings of the phrase's first n_ctx tokens while the prefix string is the whole phrase (so with
    N_CTX 2 and "a photo of a" the input is [SOS] ctx ctx "of a <class>."). Random contexts are
    normal(std 0.02) in CLIP's dtype, class-specific when `n_cls_specific` > 0, with prefix "X X ...".
    Values are rounded through CLIP's dtype exactly like the official initialisation, then kept in fp32.
    """
    dtype = clip_model.dtype
    width = clip_model.ln_final.weight.shape[0]
    context_length = clip_model.positional_embedding.shape[0]
    if n_ctx > context_length - 3:
        # before allocating: a huge N_CTX would otherwise first try to allocate the context
        raise ConfigError(f"N_CTX {n_ctx} does not fit the text context length {context_length} of the backbone "
                          f"(SOS, a class name and EOT need at least 3 tokens): use at most {context_length - 3}")
    ctx_init = ctx_init.replace("_", " ")
    if ctx_init and (derive_n_ctx or n_ctx <= 4):
        if derive_n_ctx:
            n_ctx = len(ctx_init.split(" "))
        tokens = clip.tokenize(ctx_init).to(clip_model.token_embedding.weight.device)
        n_tokens = int(tokens.argmax(dim=-1)) - 1
        if n_tokens < n_ctx:
            raise ConfigError(
                f"CTX_INIT {ctx_init!r} has {n_tokens} tokens, fewer than N_CTX {n_ctx}; use a longer phrase, "
                f"a smaller N_CTX or an empty CTX_INIT"
            )
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokens).to(dtype)
        ctx = embedding[0, 1 : 1 + n_ctx].float()
        prefix = ctx_init
    else:
        shape = (n_cls_specific, n_ctx, width) if n_cls_specific else (n_ctx, width)
        ctx = torch.empty(shape, dtype=dtype)
        nn.init.normal_(ctx, std=0.02)
        ctx = ctx.float()
        prefix = " ".join(["X"] * n_ctx)
    return nn.Parameter(ctx.clone()), prefix, n_ctx


def prompt_parameters(count: int, n_tokens: int, width: int) -> nn.ParameterList:
    """`count` independent fp32 prompt tensors [n_tokens, width], normal(std 0.02) as in the official code."""
    params = nn.ParameterList(nn.Parameter(torch.empty(n_tokens, width)) for _ in range(count))
    for param in params:
        nn.init.normal_(param, std=0.02)
    return params


def check_vision_prompt_tokens(n_tokens: int, clip_model: nn.Module, key: str) -> None:
    """Vision prompt tokens are appended to the image tokens, so no position limit bounds them as the context
    length bounds text prompts; more prompt tokens than the image's own (CLS and patches) is refused as a
    mistake (the papers use 2 to 16), before anything is allocated."""
    image_tokens = clip_model.visual.positional_embedding.shape[0]
    if not 1 <= n_tokens <= image_tokens:
        raise ConfigError(f"{key} must be between 1 and {image_tokens}, the backbone's own image tokens (CLS and "
                          f"patches; the papers use 2 to 16); got {n_tokens}")


def round_to_dtype_(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Round a module's (fp32 master) parameters through `dtype`, reproducing the official initial values of
    modules it casts to CLIP's dtype (e.g. MaPLe's `proj.half()`), while training continues in fp32."""
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(param.to(dtype))
    return module


# --------------------------------------------------------------------------------------------------------
# Prompt learners


@dataclass(frozen=True)
class SpeedOptions:
    """The exact speed-ups (TRAINER.SPEEDUPS.*) and the evaluation text chunk (TRAINER.EVAL_TEXT_CHUNK)."""

    text_truncation: bool = True
    eval_cache: bool = True
    fused_attention: bool = True
    text_chunk: int = 256
    shared_prefix: bool = True

    @classmethod
    def from_cfg(cls, cfg) -> "SpeedOptions":
        speedups = cfg.TRAINER.SPEEDUPS
        return cls(speedups.TEXT_TRUNCATION, speedups.EVAL_CACHE, speedups.FUSED_ATTENTION, cfg.TRAINER.EVAL_TEXT_CHUNK,
                   speedups.SHARED_PREFIX)

    def text_plan(self, eot_indices: Sequence[int], layout: torch.Tensor, deep_prompts: Sequence[torch.Tensor],
                  prefix_groups: int = 1) -> TextPlan:
        """The encoder's plan for rows with these EOT positions (host ints) whose position layout (see
        `clip.text_plan`) is `layout` [rows of one prefix group, L]. A deep prompt given per row ([N, n, D])
        is not known to be shared, so it ends the prefix at its first position."""
        prefix = leading_shared_positions(layout) if self.shared_prefix else 0
        if any(prompt.dim() == 3 for prompt in deep_prompts):
            prefix = min(prefix, 1)
        return plan_text(eot_indices, layout.shape[1], truncate=self.text_truncation,
                         deep_prompt_tokens=max((p.shape[-2] for p in deep_prompts), default=0),
                         shared_prefix=prefix, prefix_groups=prefix_groups,
                         learned_positions_end=learned_end(layout))

    def chunk_size(self, total: int) -> int:
        """Rows per text-encoder call: chunks only when no gradient is kept (evaluation)."""
        if torch.is_grad_enabled() or self.text_chunk <= 0:
            return max(total, 1)
        return self.text_chunk


class PromptLearner(nn.Module):
    """What a method learns on the image-independent side: per-class text features, and the prompts of the
    vision transformer (the shallow ones appended to the patch tokens and one tensor per deeper layer)."""

    n_cls: int

    def class_text_features(self, clip_model: nn.Module, options: SpeedOptions) -> torch.Tensor:
        """[n_cls, embed_dim] text features (not normalised)."""
        raise NotImplementedError

    def vision_prompts(self) -> tuple[Optional[torch.Tensor], list[torch.Tensor]]:
        return None, []


class FixedTextLearner(PromptLearner):
    """Hand-crafted class text features computed once at build time (zero-shot CLIP, VPT). A non-persistent
    buffer: it follows the model's device but is rebuilt from the class names, never saved."""

    def __init__(self, text_features: torch.Tensor):
        super().__init__()
        self.n_cls = text_features.shape[0]
        self.register_buffer("fixed_text_features", text_features, persistent=False)

    def class_text_features(self, clip_model: nn.Module, options: SpeedOptions) -> torch.Tensor:
        return self.fixed_text_features


def check_prompts_fit(clip_model: nn.Module, prompts: Sequence[str]) -> None:
    """Raise a ValueError saying what to shorten when a prompt (plus SOS and EOT) exceeds the backbone's text
    context; the tokenizer's own error would only quote the prompt."""
    context_length = clip_model.positional_embedding.shape[0]
    lengths = [len(_tokenizer.encode(prompt)) + 2 for prompt in prompts]
    longest = max(range(len(prompts)), key=lengths.__getitem__)
    excess = lengths[longest] - context_length
    if excess > 0:
        raise ConfigError(
            f"the prompt {prompts[longest]!r} needs {lengths[longest]} tokens, more than the text context length "
            f"{context_length} of the backbone: lower N_CTX (or shorten CTX_INIT or the class name) by at least {excess}"
        )


class TextPromptLearner(PromptLearner):
    """Learned context tokens right after SOS of the prompts "<prefix> <class name>." (one per class; the text
    after the context is `class_template` formatted with the class name).

    Buffers `token_prefix` (SOS) and `token_suffix` (class tokens, ".", EOT, padding) keep the official
    names and shapes; they are rebuilt from the current class names, so `load_model` ignores them.
    """

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], ctx: nn.Parameter, prompt_prefix: str,
                 n_ctx: int, class_template: str = "{}."):
        super().__init__()
        self.ctx = ctx
        names = [name.replace("_", " ") for name in classnames]
        self.name_lens = [len(_tokenizer.encode(name)) for name in names]
        # what follows the context: "<class name>." by default, a dataset's words around the name for TCP
        prompts = [f"{prompt_prefix} {class_template.format(name)}" for name in names]
        check_prompts_fit(clip_model, prompts)
        self.tokenized_prompts = clip.tokenize(prompts)
        device = clip_model.token_embedding.weight.device
        with torch.no_grad():
            embedding = clip_model.token_embedding(self.tokenized_prompts.to(device)).to(clip_model.dtype)
        self.register_buffer("token_prefix", embedding[:, :1].clone())
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx :].clone())
        self.register_buffer("eot_indices", self.tokenized_prompts.argmax(dim=-1).to(device), persistent=False)
        self.eot_positions = self.tokenized_prompts.argmax(dim=-1).tolist()  # host copy: plans need no sync
        self.n_cls = len(names)
        self.n_ctx = n_ctx
        self._plans: dict = {}

    def class_contexts(self, index: slice) -> torch.Tensor:
        """[n, n_ctx, width] context of the classes in `index`, in the token buffers' dtype."""
        prefix = self.token_prefix[index]
        ctx = self.ctx.to(prefix.dtype)
        if ctx.dim() == 2:
            return ctx.unsqueeze(0).expand(prefix.shape[0], -1, -1)
        return ctx[index]

    def assemble(self, prefix: torch.Tensor, ctx: torch.Tensor, suffix: torch.Tensor, index: slice) -> torch.Tensor:
        """The prompts [n, L, W] of the classes in `index` from their SOS [n, 1, W], context [n, n_ctx, W] and
        class tokens [n, rest, W]. Also run on position ids (W = 1) to find what the classes share."""
        return torch.cat([prefix, ctx, suffix], dim=1)

    def class_prompts(self, index: slice) -> torch.Tensor:
        """Embedded prompts [n, 77, width] of the classes in `index` (no positional embedding)."""
        return self.assemble(self.token_prefix[index], self.class_contexts(index), self.token_suffix[index], index)

    def position_layout(self, index: slice) -> torch.Tensor:
        """[n, 77] ids of what each position of the prompts in `index` holds (`clip.text_plan`): token ids,
        and for the context -(1 + k) when one context is broadcast to every class, a different negative id
        per class when the context is class-specific. Assembled by `assemble`, so it follows the prompts."""
        tokens = self.tokenized_prompts[index]
        rows, n_ctx = tokens.shape[0], self.n_ctx
        context = -1 - torch.arange(n_ctx).expand(rows, -1)
        if self.ctx.dim() == 3:  # class-specific: one id per (class, k)
            classes = torch.arange(self.n_cls)[index]
            context = context - n_ctx * (1 + classes.unsqueeze(1))
        ids = self.assemble(tokens[:, :1, None], context[..., None], tokens[:, 1 + n_ctx:, None], index)
        return ids[..., 0]

    def text_plan(self, index: slice, options: SpeedOptions, deep_prompts: Sequence[torch.Tensor],
                  prefix_groups: int = 1) -> TextPlan:
        """The encoder's plan for the classes in `index`, repeated `prefix_groups` times (CoCoOp: once per
        image), made on the first call and kept (host-side work: no device sync on later calls)."""
        key = (index.start, index.stop, prefix_groups, options, tuple((p.dim(), p.shape[-2]) for p in deep_prompts))
        if key not in self._plans:
            self._plans[key] = options.text_plan(self.eot_positions[index] * prefix_groups,
                                                 self.position_layout(index), deep_prompts, prefix_groups)
        return self._plans[key]

    def deep_text_prompts(self) -> list[torch.Tensor]:
        """One [n_ctx, width] tensor per text layer 1.. replacing positions 1..n_ctx at its input."""
        return []

    def class_text_features(self, clip_model: nn.Module, options: SpeedOptions) -> torch.Tensor:
        deep = self.deep_text_prompts()
        chunk = options.chunk_size(self.n_cls)
        features = []
        for start in range(0, self.n_cls, chunk):
            index = slice(start, min(start + chunk, self.n_cls))
            # a deep prompt given per class ([n_cls, n, D], TCP's class-aware prompts) is cut like the classes
            rows = [p[index] if p.dim() == 3 else p for p in deep]
            features.append(clip_model.encode_text_embeddings(
                self.class_prompts(index), self.eot_indices[index], deep_prompts=rows,
                plan=self.text_plan(index, options, rows)))
        return torch.cat(features)


@torch.no_grad()
def encode_texts(clip_model: nn.Module, texts: Sequence[str], options: SpeedOptions) -> torch.Tensor:
    """[N, E] raw (not normalised) features of hand-written texts, in CLIP's dtype, in chunks of classes."""
    device = clip_model.token_embedding.weight.device
    chunk = options.chunk_size(len(texts))
    parts = []
    for start in range(0, len(texts), chunk):
        tokens = clip.tokenize(list(texts[start:start + chunk]))
        plan = options.text_plan(tokens.argmax(dim=-1).tolist(), tokens, [])  # tokens alone: nothing learned
        tokens = tokens.to(device)
        embeddings = clip_model.token_embedding(tokens).to(clip_model.dtype)
        with fused_attention(options.fused_attention):
            parts.append(clip_model.encode_text_embeddings(embeddings, tokens.argmax(dim=-1), plan=plan))
    return torch.cat(parts)


@torch.no_grad()
def encode_class_templates(clip_model: nn.Module, classnames: Sequence[str], templates: Sequence[str],
                           options: SpeedOptions, normalize_each: bool = True) -> torch.Tensor:
    """Hand-crafted class features: each template's features normalised, averaged over templates and
    normalised again (one template: its normalised features; several: the ZeroshotCLIP2 ensemble).
    `normalize_each=False` averages the raw features instead (PromptSRC's teacher, PROTOCOL §8 #20)."""
    names = [name.replace("_", " ") for name in classnames]
    total = 0
    for template in templates:
        features = encode_texts(clip_model, [template.format(name) for name in names], options).float()
        total = total + (features / features.norm(dim=-1, keepdim=True) if normalize_each else features)
    mean = total / len(templates)
    return mean / mean.norm(dim=-1, keepdim=True)


@torch.no_grad()
def fp32_template_features(clip_model: nn.Module, classnames: Sequence[str], templates: Sequence[str],
                           options: SpeedOptions, normalize_each: bool = True) -> torch.Tensor:
    """`encode_class_templates` computed in fp32 whatever the precision, as the official frozen teachers of
    PromptSRC and ProGrad (their own fp32 CLIP): a temporary fp32 copy when the model holds fp16 weights,
    autocast off."""
    fp32_model = clip_model if clip_model.dtype == torch.float32 else copy.deepcopy(clip_model).float()
    device_type = clip_model.logit_scale.device.type
    with torch.autocast(device_type, enabled=False):
        return encode_class_templates(fp32_model, classnames, templates, options, normalize_each=normalize_each)


# --------------------------------------------------------------------------------------------------------
# The prompted model


def l2_normalize(features: torch.Tensor) -> torch.Tensor:
    """Unit-norm fp32 features (see `cosine_logits`)."""
    features = features.float()
    return features / features.norm(dim=-1, keepdim=True)


def cosine_logits(scale: torch.Tensor, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """scale * image @ text^T in fp32 with autocast off: at CLIP's scale of 100, bf16 logits would step by up to
    0.5 and tie or swap top classes. Text [C, E] is shared by the batch; [B, C, E] is per image (CoCoOp). The
    official fp16 path computes fp16 logits and the cross-entropy on them."""
    with torch.autocast(image_features.device.type, enabled=False):
        image_features, text_features = image_features.float(), text_features.float()
        if text_features.dim() == 3:
            return scale.float() * torch.einsum("be,bce->bc", image_features, text_features)
        return scale.float() * image_features @ text_features.t()


class PromptedCLIP(nn.Module):
    """The official `CustomCLIP`: a frozen CLIP (`clip_model`) and a `prompt_learner` (the trainable part of a
    prompt method; a subclass may add others, e.g. an `adapter`, which its trainer's SPEC.trained names).
    forward(image) returns logits = logit_scale.exp() * normalised image @ normalised text features.

    Evaluation cache: when the prompt learner is in eval mode and no gradient is recorded, the class text
    features and the vision prompts do not depend on the batch, so they are computed once and reused. The
    cache is keyed on the storage and version counter of every prompt parameter and buffer (any optimizer
    step, weight load or device/dtype move changes them) and on the autocast state; it is dropped as soon
    as the model runs in training mode. Only the prompt learner's tensors key the cache, so a trained part
    outside it must act on what `class_side` returns, not inside it.
    """

    def __init__(self, clip_model: nn.Module, prompt_learner: PromptLearner, options: SpeedOptions):
        super().__init__()
        # Registered first so that a CLIP module shared by mistake would show up under "prompt_learner."
        # and be caught by `freeze_all_but_trained`.
        self.prompt_learner = prompt_learner
        self.clip_model = clip_model
        self.options = options
        self._cache: Optional[tuple] = None

    @property
    def dtype(self) -> torch.dtype:
        return self.clip_model.dtype

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image_features, text_features = self.features(image)
        return cosine_logits(self.logit_scale(), image_features, text_features)

    def train(self, mode: bool = True) -> "PromptedCLIP":
        """Training mode for the prompts only: the frozen CLIP stays in eval mode, so a ResNet's BatchNorm
        statistics never move (the official code switches the whole model)."""
        super().train(mode)
        self.clip_model.eval()
        return self

    def features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised prompted image features [B, E], normalised class text features [n_cls, E])."""
        with fused_attention(self.options.fused_attention):
            text_features, (prompts, deep_prompts) = self.class_side()
            image_features = self.clip_model.encode_image(image, prompts=prompts, deep_prompts=deep_prompts or None)
        return l2_normalize(image_features), text_features

    def logit_scale(self) -> torch.Tensor:
        return self.clip_model.logit_scale.exp().float()

    def class_side(self) -> tuple[torch.Tensor, tuple[Optional[torch.Tensor], list[torch.Tensor]]]:
        """(normalised class text features, vision prompts), from the cache when it is valid."""
        if self.prompt_learner.training or torch.is_grad_enabled() or not self.options.eval_cache:
            self._cache = None
            return self._compute_class_side()
        key = self._cache_key()
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._compute_class_side())
        return self._cache[1]

    def _compute_class_side(self):
        text_features = self.prompt_learner.class_text_features(self.clip_model, self.options)
        return l2_normalize(text_features), self.prompt_learner.vision_prompts()

    def _cache_key(self) -> tuple:
        device_type = self.clip_model.logit_scale.device.type
        tensors = chain(self.prompt_learner.parameters(), self.prompt_learner.buffers())
        state = tuple((t.data_ptr(), t._version, t.dtype) for t in tensors)
        return state, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


def freeze_all_but_prompts(model: PromptedCLIP) -> list[str]:
    """A prompt method's freezing: exactly the prompt learner's parameters trainable, no CLIP weight among them."""
    return freeze_all_but_trained(model, ("prompt_learner",), model.clip_model)


# --------------------------------------------------------------------------------------------------------
# Checkpoints

# Official IVLP / VPT checkpoints keep their prompts inside CLIP's modules; ours live in the prompt learner.
_OFFICIAL_KEYS = (
    (re.compile(r"image_encoder\.VPT"), "prompt_learner.vision_ctx"),
    (re.compile(r"image_encoder\.transformer\.resblocks\.(\d+)\.VPT_shallow"), "prompt_learner.vision_deep_prompts.{}"),
    (re.compile(r"text_encoder\.transformer\.resblocks\.(\d+)\.VPT_shallow"), "prompt_learner.text_deep_prompts.{}"),
)


def rename_official_vpt_key(key: str) -> str:
    """Map the official IVLP/VPT prompt keys to ours: `image_encoder.VPT` -> `prompt_learner.vision_ctx`,
    `image_encoder.transformer.resblocks.{i}.VPT_shallow` -> `prompt_learner.vision_deep_prompts.{i-1}`,
    `text_encoder.transformer.resblocks.{i}.VPT_shallow` -> `prompt_learner.text_deep_prompts.{i-1}`
    (the official layer i >= 1 owns the prompt of layer i; our lists start at layer 1). Others unchanged."""
    for pattern, target in _OFFICIAL_KEYS:
        match = pattern.fullmatch(key)
        if match:
            return target.format(*(int(g) - 1 for g in match.groups()))
    return key


def load_prompt_weights(module: nn.Module, state_dict: dict) -> None:
    """Load the learned prompt weights of a checkpoint (ours or the official layout, IVLP/VPT keys mapped by
    `rename_official_vpt_key`, which leaves every other key as it is) into `module`.

    Only the trainable parameters are taken: the class-name buffers `token_prefix`/`token_suffix` are
    rebuilt from the current class names (this is what lets base-class prompts be evaluated on novel
    classes, as in the official code) and the frozen CLIP weights come from the backbone.
    """
    renamed = {rename_official_vpt_key(key[len("module."):] if key.startswith("module.") else key): value
               for key, value in state_dict.items()}
    trainable = {name: p for name, p in module.named_parameters() if p.requires_grad}
    missing = [name for name in trainable if name not in renamed]
    if missing:
        raise KeyError(f"the checkpoint lacks the trainable parameters {missing}; it holds {sorted(renamed)[:20]}...")
    wrong = [f"{name}: checkpoint {tuple(renamed[name].shape)} vs model {tuple(p.shape)}"
             for name, p in trainable.items() if renamed[name].shape != p.shape]
    if wrong:
        raise InputError("checkpoint shapes differ from the model (trained with another N_CTX, PROMPT_DEPTH, CSC, "
                         "class count or backbone?): " + "; ".join(wrong))
    module.load_state_dict({name: renamed[name] for name in trainable}, strict=False)


# --------------------------------------------------------------------------------------------------------
# Trainer skeleton


class PromptTrainer(TrainerX):
    """Dassl trainer of a `PromptedCLIP`. A method sets the class attributes and `build_custom_clip`; its `SPEC`
    (trainers/method.py) declares what it trains, which the freezing, the optimizer, the checkpoints and the
    parameter count follow."""

    METHOD_KEY = ""  # the config node TRAINER.<METHOD_KEY>
    MODEL_NAME = ""  # registered name = checkpoint sub-folder (official names)
    REGISTER_PROMPT_LEARNER = False  # CoOp / CoCoOp register only the prompt learner, the others the whole model
    SPEC = MethodSpec()

    @property
    def method_cfg(self):
        return self.cfg.TRAINER[self.METHOD_KEY]

    @property
    def spec(self) -> MethodSpec:
        return spec_of(type(self))

    def check_cfg(self, cfg) -> None:
        check_precision(cfg.TRAINER[self.METHOD_KEY].PREC, self.spec.precision_key, self.spec.precisions)
        check_prompt_counts(cfg.TRAINER[self.METHOD_KEY], f"TRAINER.{self.METHOD_KEY}")

    def build_custom_clip(self, clip_model: nn.Module, classnames: Sequence[str]) -> PromptedCLIP:
        raise NotImplementedError

    def build_model(self) -> None:
        cfg = self.cfg
        self.precision = Precision(self.method_cfg.PREC, self.device, self.spec.precision_key)
        clip_model = load_clip_model(cfg, self.precision)
        check_input_size(cfg, clip_model)
        clip_model.to(self.device)
        apply_model_switches(clip_model, cfg)
        print("Building custom CLIP")
        self.model = self.build_custom_clip(clip_model, self.dm.dataset.classnames)
        print("Turning off gradients in both the image and the text encoder")
        trainable = freeze_all_but_trained(self.model, self.spec.trained, self.model.clip_model)
        print(f"Parameters to be updated: {set(trainable)}")
        module = self.registered_module()
        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(module, cfg.MODEL.INIT_WEIGHTS)
        self.model.to(self.device)
        # The trained parts only: the same updates as the official optimizer over the whole model (frozen tensors
        # get no gradient), without optimizer state for the frozen CLIP.
        self.optim, self.sched = self.build_optimization([p for p in module.parameters() if p.requires_grad])
        self.register_model(self.MODEL_NAME, module, self.optim, self.sched, self.precision.scaler)
        print(f"Trained parameters: {trained_parameter_count(self):,}")

    def build_optimization(self, params: list[nn.Parameter]) -> tuple:
        """(optimizer, LR scheduler) of the trained parameters: OPTIM's, stepped per epoch (Dassl). A method whose
        official code optimises otherwise (Tip-Adapter-F: AdamW stepped per iteration) overrides it."""
        optim = build_optimizer(params, self.cfg.OPTIM)
        return optim, build_lr_scheduler(optim, self.cfg.OPTIM)

    def registered_module(self) -> nn.Module:
        """What is checkpointed under MODEL_NAME: the prompt learner (CoOp/CoCoOp's official layout), else the
        whole model, of which the checkpoint keeps the trained parameters and the buffers."""
        if not self.REGISTER_PROMPT_LEARNER:
            return self.model
        outside = [p for p in self.spec.trained if not (p == "prompt_learner" or p.startswith("prompt_learner."))]
        if outside:
            raise ConfigError(f"{type(self).__name__} registers only its prompt learner (REGISTER_PROMPT_LEARNER) "
                              f"but declares trained parts outside it: {outside}")
        return self.model.prompt_learner

    def parse_batch_train(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.to_device(batch["img"]), self.to_device(batch["label"])

    def forward_backward(self, batch: dict) -> dict:
        """One step. Nothing here reads a tensor on the host: a NaN/inf loss is caught, on every process alike,
        when the epoch loop reads the returned summary (dassl/engine/loss_log.py)."""
        image, label = self.parse_batch_train(batch)
        with self.precision.autocast():
            loss, logits = self.training_loss(image, label)
        self.backward_and_update(loss)
        summary = self.loss_summary(loss, logits, label)
        # Per-epoch LR schedule stepped on the last batch, as every official prompt trainer does.
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    def backward_and_update(self, loss) -> None:
        """One optimizer step from what `training_loss` returned (ProGrad: its two losses)."""
        self.precision.backward_and_step(loss, self.optim)

    def training_loss(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of one training batch, run under the precision's autocast; cross-entropy by default."""
        logits = self.model(image)
        return F.cross_entropy(logits, label), logits

    def loss_summary(self, loss: torch.Tensor, logits: torch.Tensor, label: torch.Tensor) -> dict:
        """The figures of the log line, as tensors: the epoch loop reads them all at once at the next line."""
        return {"loss": loss.detach()}

    def model_inference(self, input: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():
            return self.model(input)

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        for name, model_path, checkpoint in self.checkpoints_to_load(directory, epoch):
            print(f'Loading weights to {name} from "{model_path}" (epoch = {checkpoint["epoch"]})')
            try:
                load_prompt_weights(self._models[name], checkpoint["state_dict"])
            except (KeyError, ValueError) as error:
                reason = error.args[0] if isinstance(error, KeyError) else error
                raise InputError(f'Checkpoint "{model_path}" does not fit the model: {reason}') from error
