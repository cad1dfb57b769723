"""CLIP (ViT or ModifiedResNet image tower + causal text transformer) with the one prompt mechanism.

Parameter names are OpenAI's, so their checkpoints load strictly. Prompts enter through arguments, never
through per-method transformer blocks:
- text: `encode_text_embeddings(embeddings, eot_indices, deep_prompts)`; deep prompt k replaces positions
  1 .. 1+n (right after SOS) at the input of block k+1; a `TextPlan` (clip/text_plan.py) says which
  positions are computed: each row cut after its EOT, and the prefix all rows share encoded once;
- vision: `encode_image(image, prompts, deep_prompts)`; shallow prompts are appended after the class and
  patch tokens (after the positional embedding, before ln_pre) and deep prompt k replaces those last n
  tokens at the input of block k+1.
Inside the transformers activations are batch-first [N, L, D], or, for the text rows of a `TextPlan`, packed
tokens [T, D] (`Transformer.forward_packed`); `Transformer.forward` keeps OpenAI's sequence-first [L, N, D]
convention for code that calls `model.transformer(x)` directly.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import attention, fused_attention, fused_attention_enabled, set_fused_attention
from .linear import Linear, linear
from .resnet import ModifiedResNet
from .text_plan import TailPacking, TextPlan, plan_text

KeysValues = tuple[torch.Tensor, torch.Tensor]

__all__ = [
    "CLIP", "CLIPConfig", "LayerNorm", "QuickGELU", "ResidualAttentionBlock", "SelfAttention", "Transformer",
    "VisionTransformer", "build_model", "convert_weights", "fused_attention", "fused_attention_enabled",
    "TextPlan", "infer_config", "plan_text", "set_fused_attention", "set_shared_prefix", "set_text_truncation",
    "shared_prefix", "shared_prefix_enabled", "text_truncation", "text_truncation_enabled",
]

class _Switch:
    """A process-wide default with a context manager that restores the previous value on exit."""

    def __init__(self) -> None:
        self.enabled = True

    def set(self, enabled: bool) -> None:
        self.enabled = bool(enabled)

    @contextlib.contextmanager
    def scope(self, enabled: bool) -> Iterator[None]:
        previous = self.enabled
        self.set(enabled)
        try:
            yield
        finally:
            self.set(previous)


_truncation = _Switch()
_prefix_sharing = _Switch()

# Names of the prompt parameters a model built with an IVLP/VPT `design_details` owns (clip/design.py): the
# official fork's, so its checkpoints load and its trainers' "VPT"-in-name freezing rule finds them. The
# vision tower's shallow prompts are `visual.VPT`; block k >= 1 of either tower holds its deep prompt.
OWNED_PROMPT = "VPT"
OWNED_DEEP_PROMPT = "VPT_shallow"


def set_text_truncation(enabled: bool) -> None:
    """Default for `truncate` in the text encoders: drop positions after each row's EOT (True, default)."""
    _truncation.set(enabled)


def text_truncation_enabled() -> bool:
    return _truncation.enabled


def text_truncation(enabled: bool) -> contextlib.AbstractContextManager:
    return _truncation.scope(enabled)


def set_shared_prefix(enabled: bool) -> None:
    """Default for `share_prefix` in the text encoders: compute the leading positions that every row holds
    identically once (True, default). Only for encodes without a `TextPlan` and without gradients into the
    rows; see `CLIP.encode_text_embeddings`."""
    _prefix_sharing.set(enabled)


def shared_prefix_enabled() -> bool:
    return _prefix_sharing.enabled


def shared_prefix(enabled: bool) -> contextlib.AbstractContextManager:
    return _prefix_sharing.scope(enabled)


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
        self.out_proj = Linear(width, width)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        return self.forward_keeping_kv(x, causal)[0]

    def forward_keeping_kv(self, x: torch.Tensor, causal: bool) -> tuple[torch.Tensor, KeysValues]:
        """x: [N, L, D] -> (output, this input's keys and values [N, heads, L, d])."""
        attended, kv = self._attend(linear(x, self.in_proj_weight, self.in_proj_bias), causal)
        return self.out_proj(attended), kv

    def forward_packed(self, x: torch.Tensor, causal: bool, packing: TailPacking,
                       prefix_kv: Optional[KeysValues] = None) -> torch.Tensor:
        """x: packed tokens [T, D] (see `TailPacking`): the projections run on all tokens at once, attention per
        length group. `prefix_kv`: a shared prefix's keys and values [G, heads, P, d] (one per prefix group),
        which every row's queries attend to before its own keys (causal: the rows follow the prefix)."""
        qkv = linear(x, self.in_proj_weight, self.in_proj_bias)
        # split, not one slice per group: its backward joins the groups' gradients once, where slices would each
        # build a gradient of the whole [T, 3D]
        pieces = qkv.split(packing.group_tokens) if len(packing.groups) > 1 else (qkv,)
        outputs = []
        for group, piece in zip(packing.groups, pieces):
            group_kv = None if prefix_kv is None else _kv_for_rows(prefix_kv, group.owner, group.count)
            outputs.append(group.unpadded(self._attend(group.padded(piece), causal, group_kv)[0]))
        return self.out_proj(outputs[0] if len(outputs) == 1 else torch.cat(outputs))

    def _attend(self, qkv: torch.Tensor, causal: bool,
                prefix_kv: Optional[KeysValues] = None) -> tuple[torch.Tensor, KeysValues]:
        """Projected rows [N, L, 3D] -> (attention output [N, L, D] before out_proj, keys and values [N, heads,
        L, d]); with `prefix_kv` ([N, heads, P, d]) the queries attend to those keys first."""
        batch, length, width = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        q, k, v = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        keys, values = k, v
        if prefix_kv is not None:
            keys, values = torch.cat([prefix_kv[0], k], dim=2), torch.cat([prefix_kv[1], v], dim=2)
        out = attention(q, keys, values, causal=causal)
        return out.transpose(1, 2).reshape(batch, length, width), (k, v)


# The MLP activations of the CLIP family: OpenAI's (and OpenCLIP's "-quickgelu" models') sigmoid
# approximation, and the exact GELU most OpenCLIP models were trained with.
ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_width: int | None = None, activation: str = "quick_gelu"):
        super().__init__()
        mlp_width = mlp_width or width * 4
        self.attn = SelfAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", Linear(width, mlp_width)),
            ("gelu", ACTIVATIONS[activation]()),
            ("c_proj", Linear(mlp_width, width)),
        ]))
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor, causal: bool = False, keep_kv: bool = False, *,
                packing: Optional[TailPacking] = None,
                prefix_kv: Optional[KeysValues] = None) -> torch.Tensor | tuple[torch.Tensor, KeysValues]:
        """x: [N, L, D], or packed tokens [T, D] with their `packing` (and a shared prefix's keys and values,
        see SelfAttention.forward_packed). The block's output; with `keep_kv` (rows only), (output, the keys and
        values its attention computed from x)."""
        kv = None
        if packing is not None:
            attended = self.attn.forward_packed(self.ln_1(x), causal, packing, prefix_kv)
        else:
            attended, kv = self.attn.forward_keeping_kv(self.ln_1(x), causal)
        x = x + attended
        x = x + self.mlp(self.ln_2(x))
        return (x, kv) if keep_kv else x


def _broadcast_prompt(prompt: torch.Tensor, batch: int, like: torch.Tensor, what: str) -> torch.Tensor:
    """[n, D] or [N, n, D] prompt -> [N, n, D] in the dtype/device of the activations it joins."""
    width = like.shape[-1]
    if prompt.dim() == 2:
        prompt = prompt.unsqueeze(0).expand(batch, -1, -1)
    if prompt.dim() != 3 or prompt.shape[0] != batch or prompt.shape[-1] != width:
        raise ValueError(f"{what} has shape {tuple(prompt.shape)}; expected [n, {width}] or [{batch}, n, {width}] "
                         f"(width {width} comes from the model)")
    return prompt.to(dtype=like.dtype, device=like.device)


def _replace_prompt(x: torch.Tensor, prompt: torch.Tensor, start: int, packing: Optional[TailPacking],
                    what: str) -> torch.Tensor:
    """x with positions start..start+n of every row replaced by `prompt` ([n, D] or [N, n, D]); x is [N, L, D],
    or packed tokens [T, D] with their `packing` (position start of row r: token row_start[r] + start)."""
    if packing is None:
        prompt = _broadcast_prompt(prompt, x.shape[0], x, what)
        return torch.cat([x[:, :start], prompt, x[:, start + prompt.shape[1]:]], dim=1)
    prompt = _broadcast_prompt(prompt, packing.row_start.shape[0], x, what)
    offsets = torch.arange(start, start + prompt.shape[1], device=x.device)
    targets = (packing.row_start.unsqueeze(1) + offsets).reshape(-1)
    return x.index_copy(0, targets, prompt.reshape(-1, x.shape[-1]))


def _equal_leading_positions(embeddings: torch.Tensor, deep_prompts: Sequence[torch.Tensor]) -> int:
    """How many leading positions hold the same values in every row, deep prompts included (one host sync)."""
    same = (embeddings == embeddings[:1]).all(dim=2).all(dim=0)
    for prompt in deep_prompts:
        if prompt.dim() == 3:
            n = min(prompt.shape[1], len(same) - 1)
            same[1:1 + n] &= (prompt[:, :n] == prompt[:1, :n]).all(dim=2).all(dim=0)
    return int(same.long().cumprod(0).sum())


def _kv_for_rows(kv: KeysValues, owner: Optional[torch.Tensor], rows: int) -> KeysValues:
    """A prefix's keys and values [G, heads, P, d] for `rows` rows: broadcast (one prefix) or gathered by
    each row's prefix group `owner`."""
    if owner is None:
        return kv[0].expand(rows, -1, -1, -1), kv[1].expand(rows, -1, -1, -1)
    return kv[0][owner], kv[1][owner]


def _checkpointed_block(block: nn.Module, x: torch.Tensor, causal: bool, packing: Optional[TailPacking],
                        prefix_kv: Optional[KeysValues]) -> torch.Tensor:
    # The recomputation runs in backward, outside the caller's `fused_attention` context: pass the
    # attention path chosen now so that the recomputed activations are the ones of the forward pass.
    fused = fused_attention_enabled()

    def run(inputs: torch.Tensor, *kv: torch.Tensor) -> torch.Tensor:
        with fused_attention(fused):
            return block(inputs, causal, packing=packing, prefix_kv=kv or None)

    return checkpoint(run, x, *(prefix_kv or ()), use_reentrant=False)


class Transformer(nn.Module):
    """A stack of residual attention blocks; `causal=True` for the text tower."""

    def __init__(self, width: int, layers: int, heads: int, causal: bool = False, mlp_width: int | None = None,
                 activation: str = "quick_gelu"):
        super().__init__()
        self.width = width
        self.layers = layers
        self.causal = causal
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, mlp_width, activation)
                                         for _ in range(layers)])
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
        return self._run_blocks(x, deep_prompts, prompt_start, keep_kv=False)[0]

    def forward_packed(self, x: torch.Tensor, packing: TailPacking, deep_prompts: Sequence[torch.Tensor] = (),
                       prompt_start: int = 1, prefix_kv: Optional[Sequence[KeysValues]] = None) -> torch.Tensor:
        """x: packed tokens [T, D] (see `TailPacking`), deep prompts as in `forward_batch_first` (position
        prompt_start of each row's tail). prefix_kv[k]: the keys and values [G, heads, P, d] of the shared prefix
        at block k (`keys_values`), which every row's queries attend to first."""
        return self._run_blocks(x, deep_prompts, prompt_start, keep_kv=False, packing=packing,
                                prefix_kv=prefix_kv)[0]

    def keys_values(self, x: torch.Tensor, deep_prompts: Sequence[torch.Tensor] = (),
                    prompt_start: int = 1) -> list[KeysValues]:
        """The keys and values [N, heads, L, d] each block computes from x: a shared prefix, passed on as
        `prefix_kv` to encode the rows that follow it."""
        return self._run_blocks(x, deep_prompts, prompt_start, keep_kv=True)[1]

    def _run_blocks(self, x: torch.Tensor, deep_prompts: Sequence[torch.Tensor], prompt_start: int, keep_kv: bool,
                    packing: Optional[TailPacking] = None,
                    prefix_kv: Optional[Sequence[KeysValues]] = None) -> tuple[torch.Tensor, list[KeysValues]]:
        if len(deep_prompts) > self.layers - 1:
            raise ValueError(f"{len(deep_prompts)} deep prompts given but this transformer has {self.layers} "
                             f"layers: at most {self.layers - 1} (layers 1..{self.layers - 1}) can take them")
        kvs = []
        for index, block in enumerate(self.resblocks):
            # (a prompt of no tokens, e.g. one wholly inside a shared prefix, leaves x as it is: no copy)
            if 1 <= index <= len(deep_prompts) and deep_prompts[index - 1].shape[-2]:
                x = _replace_prompt(x, deep_prompts[index - 1], prompt_start, packing, f"deep prompt {index - 1}")
            layer_kv = None if prefix_kv is None else prefix_kv[index]
            if keep_kv:  # a shared prefix: few positions, kept whole (no checkpointing)
                x, kv = block(x, self.causal, keep_kv=True)
                kvs.append(kv)
            elif self.checkpointing and torch.is_grad_enabled():
                x = _checkpointed_block(block, x, self.causal, packing, layer_kv)
            else:
                x = block(x, self.causal, packing=packing, prefix_kv=layer_kv)
        return x, kvs


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int, mlp_width: int | None = None, activation: str = "quick_gelu"):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.width = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_width=mlp_width, activation=activation)
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
        return linear(self.ln_post(x[:, 0]), self.proj.t())


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
    # Not readable off OpenAI's weights, which all use the defaults: None = OpenAI's rule (64-wide heads,
    # MLP 4x the width). An OpenCLIP checkpoint states them in its `ARCHITECTURE_KEY` entry (clip/openclip.py).
    vision_heads: int | None = None
    vision_mlp_width: int | None = None
    transformer_mlp_width: int | None = None
    activation: str = "quick_gelu"


class CLIP(nn.Module):
    """Parameters are allocated uninitialised: weights come from `build_model` (a checkpoint) or from
    `clip.random_models` (seeded random initialisation)."""

    def __init__(self, embed_dim: int, image_resolution: int, vision_layers: int | tuple[int, int, int, int],
                 vision_width: int, vision_patch_size: int | None, context_length: int, vocab_size: int,
                 transformer_width: int, transformer_heads: int, transformer_layers: int,
                 vision_heads: int | None = None, vision_mlp_width: int | None = None,
                 transformer_mlp_width: int | None = None, activation: str = "quick_gelu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
        self.context_length = context_length
        self.vocab_size = vocab_size
        if isinstance(vision_layers, (tuple, list)):
            self.visual = ModifiedResNet(tuple(vision_layers), embed_dim, vision_heads or vision_width * 32 // 64,
                                         image_resolution, vision_width)
        else:
            self.visual = VisionTransformer(image_resolution, vision_patch_size, vision_width, vision_layers,
                                            vision_heads or vision_width // 64, embed_dim, vision_mlp_width,
                                            activation)
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads, causal=True,
                                       mlp_width=transformer_mlp_width, activation=activation)
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
                               truncate: bool | None = None, *, share_prefix: bool | None = None,
                               plan: TextPlan | None = None) -> torch.Tensor:
        """embeddings: [N, L, D] token embeddings with prompts inserted, without positional embedding.
        eot_indices: [N] position of each row's EOT token. deep_prompts[k] ([n, D] or [N, n, D]) replaces
        positions 1..1+n at the input of layer k+1.

        Two exact speed-ups, both relying on the causal mask and on only the EOT row being read:
        - truncation (`truncate`, default `text_truncation_enabled()`): each row is cut after its own EOT, the
          rows' tokens packed into one matrix (attention runs in groups of rows of similar length);
        - a shared prefix (`share_prefix`, default `shared_prefix_enabled()`): the leading positions that
          every row holds identically are encoded once, and the rows encode only their tails, attending
          to the prefix's keys and values in every layer.
        `plan` (a `TextPlan` from `clip.text_plan.plan_text`, made once by a prompt learner) fixes both, and
        the prefix it states is trusted, gradients included; an encode with a plan does no host-device
        synchronisation. Without a plan both are read from the inputs (EOT positions copied to the host;
        the prefix found by comparing the rows' values), and a prefix is shared only when no gradient flows
        into the rows (evaluation, fixed templates): with gradients, rows whose separate tensors merely have
        equal values must still get their own gradients, so only the caller can say what is shared."""
        if embeddings.dim() != 3 or embeddings.shape[-1] != self.transformer.width:
            raise ValueError(f"text embeddings have shape {tuple(embeddings.shape)}; expected "
                             f"[N, L, {self.transformer.width}]")
        if embeddings.shape[1] > self.context_length:
            raise ValueError(f"{embeddings.shape[1]} text positions exceed the context length {self.context_length}")
        deep_prompts = list(deep_prompts or ())
        eot_indices = eot_indices.to(device=embeddings.device, dtype=torch.long)
        if plan is None:
            plan = self._plan_from_inputs(embeddings, eot_indices, deep_prompts, truncate, share_prefix)
        elif truncate is not None or share_prefix is not None:
            raise ValueError("a TextPlan already fixes truncation and the shared prefix: pass `plan` alone")
        elif (plan.rows, plan.context) != tuple(embeddings.shape[:2]):
            raise ValueError(f"the TextPlan is for {plan.rows} rows of {plan.context} positions but embeddings of "
                             f"{embeddings.shape[0]} rows of {embeddings.shape[1]} were given")
        return self._encode_planned(embeddings, eot_indices, deep_prompts, plan)

    def _plan_from_inputs(self, embeddings: torch.Tensor, eot_indices: torch.Tensor,
                          deep_prompts: list[torch.Tensor], truncate: bool | None,
                          share_prefix: bool | None) -> TextPlan:
        share = _prefix_sharing.enabled if share_prefix is None else share_prefix
        gradient_free = not torch.is_grad_enabled() or not (
            embeddings.requires_grad or any(p.requires_grad and p.dim() == 3 for p in deep_prompts))
        shared = _equal_leading_positions(embeddings, deep_prompts) if share and gradient_free else 0
        return plan_text(eot_indices.tolist(), embeddings.shape[1],
                         truncate=_truncation.enabled if truncate is None else truncate,
                         deep_prompt_tokens=max((p.shape[-2] for p in deep_prompts), default=0),
                         shared_prefix=shared)

    def _encode_planned(self, embeddings: torch.Tensor, eot_indices: torch.Tensor,
                        deep_prompts: list[torch.Tensor], plan: TextPlan) -> torch.Tensor:
        prefix, per_prefix = plan.prefix, plan.rows_per_prefix
        positions = self.positional_embedding.to(self.dtype)
        # Deep prompt k covers positions 1..1+n: the part before `prefix` is applied once to the prefix,
        # the rest to each row's tail, whose first position is `tail_start` (prompt token `offset`).
        tail_start = max(prefix, 1)
        offset, prompt_start = tail_start - 1, tail_start - prefix
        prefix_kv = None
        if prefix:
            head = embeddings[::per_prefix, :prefix].to(self.dtype) + positions[:prefix]
            head_prompts = [p[..., :offset, :] if p.dim() == 2 else p[::per_prefix, :offset] for p in deep_prompts]
            prefix_kv = self.transformer.keys_values(head, head_prompts, prompt_start=1)
        packing = plan.packing(embeddings.device)
        tails = embeddings.detach() if plan.constant_tail else embeddings
        x = tails.reshape(-1, tails.shape[-1]).index_select(0, packing.token_source).to(self.dtype)
        x = x + positions.index_select(0, packing.positions)
        tail_prompts = [p[..., offset:, :] for p in deep_prompts]
        x = self.transformer.forward_packed(x, packing, tail_prompts, prompt_start, prefix_kv)
        # LayerNorm acts per token, so normalising only the EOT tokens is the same as normalising all.
        x = self.ln_final(x.index_select(0, packing.row_start + (eot_indices - prefix)))
        return linear(x, self.text_projection.t())

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
# A non-tensor entry of a converted OpenCLIP state dict (clip/openclip.py): the architecture facts its
# weights do not show, {"activation": "gelu" | "quick_gelu", "vision_heads": int, "transformer_heads": int}.
ARCHITECTURE_KEY = "clip_architecture"
# Non-tensor entries some OpenAI archives carry, and ours; not parameters.
METADATA_KEYS = ("input_resolution", "context_length", "vocab_size", ARCHITECTURE_KEY)


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
    stated = dict(state_dict.get(ARCHITECTURE_KEY) or {})

    def mlp_width(key: str, tower_width: int) -> int | None:  # None: OpenAI's 4x rule holds
        weight = state_dict.get(key)
        return None if weight is None or weight.shape[0] == 4 * tower_width else weight.shape[0]

    return CLIPConfig(
        embed_dim=state_dict["text_projection"].shape[1],
        image_resolution=image_resolution,
        vision_layers=vision_layers,
        vision_width=vision_width,
        vision_patch_size=patch,
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        transformer_width=width,
        transformer_heads=stated.get("transformer_heads", width // 64),
        transformer_layers=len(_layer_indices(state_dict, "transformer.resblocks.")),
        vision_heads=stated.get("vision_heads"),
        vision_mlp_width=mlp_width("visual.transformer.resblocks.0.mlp.c_fc.weight", vision_width),
        transformer_mlp_width=mlp_width("transformer.resblocks.0.mlp.c_fc.weight", width),
        activation=stated.get("activation", "quick_gelu"),
    )


def build_model(state_dict: dict, design_details: dict | None = None, source: str = "state dict", *,
                half: bool = True) -> CLIP:
    """Build CLIP from an OpenAI-format state dict (fp16 or fp32): architecture inferred, weights cast like
    OpenAI's convert_weights (`half=False`: every weight fp32, so an fp32 file keeps its exact values instead of
    being rounded through fp16 and cast back by `.float()`), loaded strictly, eval() mode.
    `design_details` is the official MaPLe fork's
    argument (clip/design.py): the IVLP and VPT designs give the model its own fp32 prompt parameters, drawn
    from the global RNG; every other design draws nothing from it."""
    from .design import attach_owned_prompts, check_design_fits, parse_design  # design.py imports this module

    design = parse_design(design_details)
    config = infer_config(state_dict, source)
    check_design_fits(design, config, source)
    with torch.device("meta"):  # no allocation or random init for weights that are overwritten anyway
        model = CLIP(**asdict(config))
    if half:
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
