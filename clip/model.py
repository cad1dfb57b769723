"""CLIP (ViT or ModifiedResNet image tower + causal text transformer) with the one prompt mechanism.

Parameter names are OpenAI's, so their checkpoints load strictly. Prompts enter through arguments, never
through per-method transformer blocks:
- text: `encode_text_embeddings(embeddings, eot_indices, deep_prompts)`; deep prompt k replaces positions
  1 .. 1+n (right after SOS) at the input of block k+1;
- vision: `encode_image(image, prompts, deep_prompts)`; shallow prompts are appended after the class and
  patch tokens (after the positional embedding, before ln_pre) and deep prompt k replaces those last n
  tokens at the input of block k+1.
Inside the transformers activations are batch-first [N, L, D]; `Transformer.forward` keeps OpenAI's
sequence-first [L, N, D] convention for code that calls `model.transformer(x)` directly.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import attention, fused_attention, fused_attention_enabled, set_fused_attention
from .resnet import ModifiedResNet

__all__ = [
    "CLIP", "CLIPConfig", "LayerNorm", "QuickGELU", "ResidualAttentionBlock", "SelfAttention", "Transformer",
    "VisionTransformer", "build_model", "convert_weights", "fused_attention", "fused_attention_enabled",
    "infer_config", "set_fused_attention", "set_text_truncation", "text_truncation", "text_truncation_enabled",
]

_truncation_enabled = True

# Names of the prompt parameters a model built with an IVLP/VPT `design_details` owns (clip/design.py): the
# official fork's, so its checkpoints load and its trainers' "VPT"-in-name freezing rule finds them. The
# vision tower's shallow prompts are `visual.VPT`; block k >= 1 of either tower holds its deep prompt.
OWNED_PROMPT = "VPT"
OWNED_DEEP_PROMPT = "VPT_shallow"


def set_text_truncation(enabled: bool) -> None:
    """Default for `truncate` in the text encoders: drop positions after the longest EOT (True, default)."""
    global _truncation_enabled
    _truncation_enabled = bool(enabled)


def text_truncation_enabled() -> bool:
    return _truncation_enabled


@contextlib.contextmanager
def text_truncation(enabled: bool) -> Iterator[None]:
    previous = _truncation_enabled
    set_text_truncation(enabled)
    try:
        yield
    finally:
        set_text_truncation(previous)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 and cast back to the input dtype (keeps fp16/bf16 activations stable)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names (packed q/k/v projection)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v, causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = SelfAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(width * 4, width)),
        ]))
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


def _broadcast_prompt(prompt: torch.Tensor, batch: int, like: torch.Tensor, what: str) -> torch.Tensor:
    """[n, D] or [N, n, D] prompt -> [N, n, D] in the dtype/device of the activations it joins."""
    width = like.shape[-1]
    if prompt.dim() == 2:
        prompt = prompt.unsqueeze(0).expand(batch, -1, -1)
    if prompt.dim() != 3 or prompt.shape[0] != batch or prompt.shape[-1] != width:
        raise ValueError(f"{what} has shape {tuple(prompt.shape)}; expected [n, {width}] or [{batch}, n, {width}] "
                         f"(width {width} comes from the model)")
    return prompt.to(dtype=like.dtype, device=like.device)


def _checkpointed_block(block: nn.Module, x: torch.Tensor, causal: bool) -> torch.Tensor:
    # The recomputation runs in backward, outside the caller's `fused_attention` context: pass the
    # attention path chosen now so that the recomputed activations are the ones of the forward pass.
    fused = fused_attention_enabled()

    def run(inputs: torch.Tensor) -> torch.Tensor:
        with fused_attention(fused):
            return block(inputs, causal)

    return checkpoint(run, x, use_reentrant=False)


# A text-encoder call costs about as much as this many extra token positions (kernel launches, small
# matrix products), so rows are split into length groups only where that saves more positions.
_GROUP_COST_IN_POSITIONS = 256


def _length_groups(lengths: torch.Tensor) -> list[torch.Tensor]:
    """Row indices grouped by length (contiguous ranges of the sorted lengths) so that the positions
    computed, sum(rows x longest + _GROUP_COST_IN_POSITIONS) over the groups, is smallest (dynamic
    programming over the distinct lengths). Few or similar rows give one group: plain truncation."""
    values, counts = (t.tolist() for t in torch.unique(lengths, return_counts=True))
    best, start = [0] + [float("inf")] * len(values), [0] * (len(values) + 1)
    for end in range(1, len(values) + 1):
        rows = 0
        for first in range(end - 1, -1, -1):  # the last group holds the distinct lengths first..end-1
            rows += counts[first]
            cost = best[first] + rows * values[end - 1] + _GROUP_COST_IN_POSITIONS
            if cost < best[end]:
                best[end], start[end] = cost, first
    bounds, end = [], len(values)
    while end > 0:
        bounds.append((values[start[end]], values[end - 1]))
        end = start[end]
    return [torch.nonzero((lengths >= low) & (lengths <= high)).flatten() for low, high in reversed(bounds)]


class Transformer(nn.Module):
    """A stack of residual attention blocks; `causal=True` for the text tower."""

    def __init__(self, width: int, layers: int, heads: int, causal: bool = False):
        super().__init__()
        self.width = width
        self.layers = layers
        self.causal = causal
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])
        # Activation checkpointing (off by default): while gradients are recorded, keep only each block's
        # input and recompute the block in the backward pass (same numbers; one more forward, less memory).
        self.checkpointing = False

    def compile_blocks(self, **compile_kwargs) -> None:
        """`torch.compile` each block in place (parameter names unchanged, so checkpoints still load);
        compilation happens at the first call of each new input shape."""
        for block in self.resblocks:
            block.compile(**compile_kwargs)

    def owned_deep_prompts(self) -> list[torch.Tensor]:
        """The deep prompts this transformer's blocks hold themselves (`OWNED_DEEP_PROMPT` of blocks 1, 2, ...,
        the official IVLP/VPT layout attached by clip/design.py); empty for a plain CLIP."""
        owned = []
        for block in list(self.resblocks)[1:]:
            prompt = getattr(block, OWNED_DEEP_PROMPT, None)
            if prompt is None:
                break
            owned.append(prompt)
        return owned

    def forward(self, x: torch.Tensor | list) -> torch.Tensor | list:
        """OpenAI's convention: x is sequence-first [L, N, D]; returns [L, N, D], with the deep prompts the
        blocks own (if any). The official MaPLe fork's call is also accepted: the list [x, deep_prompts,
        counter] (deep_prompts[counter:] go to layers 1, 2, ...) returns [x, deep_prompts, counter + used]."""
        if isinstance(x, (list, tuple)):
            x, deep_prompts, counter = x
            used = list(deep_prompts)[counter:counter + self.layers - 1]
            return [self._forward_sequence_first(x, used), deep_prompts, counter + len(used)]
        return self._forward_sequence_first(x, self.owned_deep_prompts())

    def _forward_sequence_first(self, x: torch.Tensor, deep_prompts: list[torch.Tensor]) -> torch.Tensor:
        # Text prompts sit right after SOS; vision prompts are the last tokens (see the module docstring).
        start = 1 if self.causal or not deep_prompts else x.shape[0] - deep_prompts[0].shape[-2]
        return self.forward_batch_first(x.transpose(0, 1), deep_prompts, prompt_start=start).transpose(0, 1)

    def forward_batch_first(self, x: torch.Tensor, deep_prompts: Sequence[torch.Tensor] = (),
                            prompt_start: int = 1) -> torch.Tensor:
        """x: [N, L, D]. deep_prompts[k] ([n, D] or [N, n, D]) replaces tokens prompt_start .. prompt_start+n
        at the input of block k+1 (block 0 sees the prompts already in x)."""
        if len(deep_prompts) > self.layers - 1:
            raise ValueError(f"{len(deep_prompts)} deep prompts given but this transformer has {self.layers} "
                             f"layers: at most {self.layers - 1} (layers 1..{self.layers - 1}) can take them")
        for index, block in enumerate(self.resblocks):
            if 1 <= index <= len(deep_prompts):
                prompt = _broadcast_prompt(deep_prompts[index - 1], x.shape[0], x, f"deep prompt {index - 1}")
                end = prompt_start + prompt.shape[1]
                x = torch.cat([x[:, :prompt_start], prompt, x[:, end:]], dim=1)
            if self.checkpointing and torch.is_grad_enabled():
                x = _checkpointed_block(block, x, self.causal)
            else:
                x = block(x, self.causal)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.width = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, output_dim))

    def forward(self, x: torch.Tensor, prompts: torch.Tensor | None = None,
                deep_prompts: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        x = self.conv1(x.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)  # [B, grid*grid, W]
        batch = x.shape[0]
        cls = self.class_embedding.to(x.dtype).expand(batch, 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        if prompts is None and deep_prompts is None:  # the prompts this model owns, if any (clip/design.py)
            prompts, deep_prompts = getattr(self, OWNED_PROMPT, None), self.transformer.owned_deep_prompts()
        deep_prompts = list(deep_prompts or ())
        n_prompts = 0
        if prompts is not None:
            prompts = _broadcast_prompt(prompts, batch, x, "visual prompts")
            n_prompts = prompts.shape[1]
            x = torch.cat([x, prompts], dim=1)
        for k, prompt in enumerate(deep_prompts):
            if prompt.shape[-2] != n_prompts:
                raise ValueError(f"visual deep prompt {k} has {prompt.shape[-2]} tokens but {n_prompts} shallow "
                                 "visual prompts were appended; deep prompts replace those last tokens, so the "
                                 "counts must match (pass `prompts` when using `deep_prompts`)")
        x = self.ln_pre(x)
        x = self.transformer.forward_batch_first(x, deep_prompts, prompt_start=x.shape[1] - n_prompts)
        return self.ln_post(x[:, 0]) @ self.proj


@dataclass(frozen=True)
class CLIPConfig:
    """Everything that fixes a CLIP architecture (inferred from a state dict by `infer_config`)."""
    embed_dim: int
    image_resolution: int
    vision_layers: int | tuple[int, int, int, int]  # int: ViT depth; 4-tuple: ModifiedResNet stage depths
    vision_width: int
    vision_patch_size: int | None
    context_length: int
    vocab_size: int
    transformer_width: int
    transformer_heads: int
    transformer_layers: int


class CLIP(nn.Module):
    """Parameters are allocated uninitialised: weights come from `build_model` (a checkpoint) or from
    `clip.random_models` (seeded random initialisation)."""

    def __init__(self, embed_dim: int, image_resolution: int, vision_layers: int | tuple[int, int, int, int],
                 vision_width: int, vision_patch_size: int | None, context_length: int, vocab_size: int,
                 transformer_width: int, transformer_heads: int, transformer_layers: int):
        super().__init__()
        self.context_length = context_length
        self.vocab_size = vocab_size
        if isinstance(vision_layers, (tuple, list)):
            self.visual = ModifiedResNet(tuple(vision_layers), embed_dim, vision_width * 32 // 64,
                                         image_resolution, vision_width)
        else:
            self.visual = VisionTransformer(image_resolution, vision_patch_size, vision_width, vision_layers,
                                            vision_width // 64, embed_dim)
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads, causal=True)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.empty(()))

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def encode_image(self, image: torch.Tensor, prompts: torch.Tensor | None = None,
                     deep_prompts: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        return self.visual(image.to(self.dtype), prompts, deep_prompts)

    def encode_text(self, text: torch.Tensor, truncate: bool | None = None) -> torch.Tensor:
        """text: token ids [N, L] from `clip.tokenize` (EOT is the largest id, so argmax finds it)."""
        return self.encode_text_embeddings(self.token_embedding(text), text.argmax(dim=-1),
                                           self.transformer.owned_deep_prompts(), truncate=truncate)

    def encode_text_embeddings(self, embeddings: torch.Tensor, eot_indices: torch.Tensor,
                               deep_prompts: Sequence[torch.Tensor] | None = None,
                               truncate: bool | None = None) -> torch.Tensor:
        """embeddings: [N, L, D] token embeddings with prompts inserted, without positional embedding.
        eot_indices: [N] position of each row's EOT token. deep_prompts[k] ([n, D] or [N, n, D]) replaces
        positions 1..1+n at the input of layer k+1. truncate (default: `text_truncation_enabled()`) computes
        only positions up to the EOT: the mask is causal and only the EOT row is read, so the features are
        the same. Rows are encoded in groups of similar length (`_length_groups`), each cut after its own
        longest EOT, so a few long class names do not make every row long."""
        if embeddings.dim() != 3 or embeddings.shape[-1] != self.transformer.width:
            raise ValueError(f"text embeddings have shape {tuple(embeddings.shape)}; expected "
                             f"[N, L, {self.transformer.width}]")
        if embeddings.shape[1] > self.context_length:
            raise ValueError(f"{embeddings.shape[1]} text positions exceed the context length {self.context_length}")
        deep_prompts = list(deep_prompts or ())
        eot_indices = eot_indices.to(device=embeddings.device, dtype=torch.long)
        if not (_truncation_enabled if truncate is None else truncate):
            return self._encode_text_rows(embeddings, eot_indices, deep_prompts)
        # Keep every position a deep prompt writes to, so replacement never lengthens the sequence.
        longest_prompt = max((p.shape[-2] for p in deep_prompts), default=0)
        lengths = (eot_indices + 1).clamp(min=1 + longest_prompt)
        groups = _length_groups(lengths)
        if len(groups) == 1:
            return self._encode_text_rows(embeddings[:, :int(lengths.max())], eot_indices, deep_prompts)
        features = [
            self._encode_text_rows(embeddings[rows, :int(lengths[rows].max())], eot_indices[rows],
                                   [p[rows] if p.dim() == 3 else p for p in deep_prompts])
            for rows in groups]
        return torch.cat(features)[torch.argsort(torch.cat(groups))]

    def _encode_text_rows(self, x: torch.Tensor, eot_indices: torch.Tensor,
                          deep_prompts: list[torch.Tensor]) -> torch.Tensor:
        x = x.to(self.dtype)
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        x = self.transformer.forward_batch_first(x, deep_prompts, prompt_start=1)
        # LayerNorm acts per token, so normalising only the EOT rows is the same as normalising all.
        x = self.ln_final(x[torch.arange(x.shape[0], device=x.device), eot_indices])
        return x @ self.text_projection

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image_features = self.encode_image(image)
        text_features = self.encode_text(text)
        image_features = image_features / image_features.norm(dim=1, keepdim=True)
        text_features = text_features / text_features.norm(dim=1, keepdim=True)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


def convert_weights(model: nn.Module) -> None:
    """Cast to fp16 exactly what OpenAI's checkpoints use in fp16: convolution and linear weights/biases,
    the packed attention projection, and `text_projection` / `proj`. LayerNorms, embeddings, positional
    embeddings, the class embedding, BatchNorms and logit_scale stay fp32."""
    def half(tensor: torch.Tensor | None) -> None:
        if tensor is not None:
            tensor.data = tensor.data.half()

    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            half(module.weight)
            half(module.bias)
        if isinstance(module, SelfAttention):
            half(module.in_proj_weight)
            half(module.in_proj_bias)
        for name in ("text_projection", "proj"):
            attribute = getattr(module, name, None)
            if isinstance(attribute, torch.Tensor):
                half(attribute)


_REQUIRED_TEXT_KEYS = ("token_embedding.weight", "positional_embedding", "text_projection", "ln_final.weight")
_REQUIRED_VIT_KEYS = ("visual.proj", "visual.conv1.weight", "visual.positional_embedding")
_REQUIRED_RESNET_KEYS = ("visual.layer1.0.conv1.weight", "visual.attnpool.positional_embedding")
# Non-tensor entries some OpenAI archives carry; not parameters.
METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")


def _layer_indices(state_dict: dict, prefix: str) -> set[str]:
    return {key[len(prefix):].split(".")[0] for key in state_dict if key.startswith(prefix)}


def infer_config(state_dict: dict, source: str = "state dict") -> CLIPConfig:
    """Read the architecture off a CLIP state dict (OpenAI key names). `source` names it in errors."""
    vit = "visual.proj" in state_dict
    required = _REQUIRED_TEXT_KEYS + (_REQUIRED_VIT_KEYS if vit else _REQUIRED_RESNET_KEYS)
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise ValueError(f"{source} is not a CLIP state dict: missing {missing} (expected OpenAI's key names, "
                         f"e.g. from a ViT-B/16.pt or RN50.pt file)")
    if vit:
        conv1 = state_dict["visual.conv1.weight"]
        patch = conv1.shape[-1]
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision_layers = len(_layer_indices(state_dict, "visual.transformer.resblocks."))
        vision_width, image_resolution = conv1.shape[0], patch * grid
    else:
        vision_layers = tuple(len(_layer_indices(state_dict, f"visual.layer{b}.")) for b in range(1, 5))
        vision_width = state_dict["visual.layer1.0.conv1.weight"].shape[0]
        grid = round((state_dict["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        patch, image_resolution = None, grid * 32
    width = state_dict["ln_final.weight"].shape[0]
    return CLIPConfig(
        embed_dim=state_dict["text_projection"].shape[1],
        image_resolution=image_resolution,
        vision_layers=vision_layers,
        vision_width=vision_width,
        vision_patch_size=patch,
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        transformer_width=width,
        transformer_heads=width // 64,
        transformer_layers=len(_layer_indices(state_dict, "transformer.resblocks.")),
    )


def build_model(state_dict: dict, design_details: dict | None = None, source: str = "state dict") -> CLIP:
    """Build CLIP from an OpenAI-format state dict (fp16 or fp32): architecture inferred, weights cast like
    OpenAI's convert_weights, loaded strictly, eval() mode. `design_details` is the official MaPLe fork's
    argument (clip/design.py): the IVLP and VPT designs give the model its own fp32 prompt parameters, drawn
    from the global RNG; every other design draws nothing from it."""
    from .design import attach_owned_prompts, check_design_fits, parse_design  # design.py imports this module

    design = parse_design(design_details)
    config = infer_config(state_dict, source)
    check_design_fits(design, config, source)
    with torch.device("meta"):  # no allocation or random init for weights that are overwritten anyway
        model = CLIP(**asdict(config))
    convert_weights(model)
    expected = model.state_dict()
    given = {key: value for key, value in state_dict.items() if key not in METADATA_KEYS}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{source} does not match the inferred CLIP architecture {config}: "
                         f"missing keys {missing[:10]}, unexpected keys {unexpected[:10]}")
    tensors = {}
    for key, target in expected.items():
        value = given[key]
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(f"{source}: '{key}' has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
        # copy=True: the model never shares memory with the caller's dict (or a TorchScript module).
        tensors[key] = value.to(device="cpu", dtype=target.dtype, copy=True)
    model.load_state_dict(tensors, strict=True, assign=True)
    return attach_owned_prompts(model, design).eval()
