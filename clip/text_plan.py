"""Which positions a text encode computes, decided on the host before the encode.

A `TextPlan` says, for N prompt rows:
- `prefix`: the leading positions that every row of a prefix group holds identically (same token ids, same
  learned tensors). Under the causal mask their activations are the same for every row of the group in every
  layer, so the encoder computes them once per group; each row then encodes only its own tail, whose queries
  attend to [the group's prefix keys; its own keys]. Rows form `prefix_groups` consecutive blocks of equal
  size (1 group: one prefix for all rows; CoCoOp: one group of classes per image).
- `ends`: where each row is cut (text truncation: after its own EOT). The encoder computes exactly the
  positions prefix..end-1 of every row, packed into one [tokens, D] matrix for every per-token operation (layer
  norms, projections, MLPs: one large matrix product per layer, no padding), see `TailPacking`.
- `groups`: the rows split by the length of their tails, for attention only, the one operation that needs rows
  as rows: a group's tails are padded to its longest, so a few long class names do not pad every row.
- `constant_tail`: no row's tail holds a learned vector (every learned position lies in the shared prefix), so
  no gradient flows into the tails' embeddings and the encoder reads them detached: the backward pass then
  builds no gradient of the whole [N, L, D] embeddings, which would be zeros wherever it is not the prefix.

Plans are built from host-side facts (EOT positions as Python ints, the prefix length) once per learner and
class set, so encoding with a plan needs no host-device synchronisation: its packing indices are made on a
device once and kept.

The rule for the prefix (`leading_shared_positions`): the longest run of leading columns of a layout
[N, L] of position ids that is the same in every row. A layout holds a token's id where the position holds
a fixed token, and a negative id naming the learned tensor element where it holds a learned vector; a
learned vector broadcast to every row (the same parameter, e.g. CoOp's unified context) gets the same id in
every row, a class-specific one (CoOp CSC) a different id per row. Equality of learned vectors is decided by
this structure, never by their values: two classes whose separate parameters happen to be equal must still
each receive their own gradient, which a shared computation would not give them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import torch

__all__ = ["AttentionGroup", "TailPacking", "TextPlan", "leading_shared_positions", "learned_end", "plan_text"]

# Rows are split into length groups only where that saves more than this many padded positions: each group is one
# more attention call per layer, a padded one two gathers more (on CoCoOp's 100-class step one group, a group per
# length and this value measured the same within this machine's noise).
_GROUP_COST_IN_POSITIONS = 256
# The shared prefix's own encoder pass (and its keys and values joined to every tail's in each layer) costs about
# as much as this many positions encoded: a prefix is shared only where that saves more positions, so a few short
# prompts (the demo's ten classes) are encoded whole.
_PREFIX_COST_IN_POSITIONS = 256


def _length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """Row indices grouped by length (contiguous ranges of the sorted lengths) so that the padded positions
    attention runs over, sum(rows x longest + _GROUP_COST_IN_POSITIONS) over the groups, is smallest (dynamic
    programming over the distinct lengths). Few or similar rows give one group."""
    values = sorted(set(lengths))
    counts = [0] * len(values)
    slot = {value: i for i, value in enumerate(values)}
    for length in lengths:
        counts[slot[length]] += 1
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
    return [[row for row, length in enumerate(lengths) if low <= length <= high] for low, high in reversed(bounds)]


def leading_shared_positions(layout: torch.Tensor) -> int:
    """The number of leading columns of `layout` [N, L] (a CPU integer tensor of position ids, see the
    module docstring) that are the same in every row."""
    if layout.dim() != 2:
        raise ValueError(f"a position layout is [rows, positions]; got shape {tuple(layout.shape)}")
    if layout.device.type != "cpu":
        raise ValueError("position layouts are host-side facts: pass a CPU tensor (reading a device tensor "
                         "here would synchronise with the device)")
    same = (layout == layout[:1]).all(dim=0)
    differing = (~same).nonzero()
    return int(differing[0]) if len(differing) else layout.shape[1]


@dataclass(frozen=True)
class AttentionGroup:
    """One length group of a `TailPacking`, on a device: its `count` rows' tails are `tokens` consecutive packed
    tokens, padded to `length` positions each for attention."""

    tokens: int
    count: int
    length: int
    pad_source: Optional[torch.Tensor]  # [count * length]: the group's token each padded slot reads (None: no padding)
    valid: Optional[torch.Tensor]  # [tokens]: the padded slot each token's output is read from (None: no padding)
    owner: Optional[torch.Tensor]  # [count]: each row's prefix group (None: one prefix, or none)

    def padded(self, own: torch.Tensor) -> torch.Tensor:
        """The group's tokens [tokens, C] (its part of the packed activations) as rows [count, length, C] (padding
        slots repeat their row's last token: later slots only, which the causal mask hides from every real token)."""
        if self.pad_source is not None:
            own = own.index_select(0, self.pad_source)
        return own.view(self.count, self.length, own.shape[-1])

    def unpadded(self, rows: torch.Tensor) -> torch.Tensor:
        """[count, length, C] -> the group's packed tokens [tokens, C]."""
        flat = rows.reshape(self.count * self.length, rows.shape[-1])
        return flat if self.valid is None else flat.index_select(0, self.valid)


@dataclass(frozen=True)
class TailPacking:
    """Where a plan's computed positions (each row's tail, prefix..end-1) sit in the packed [T, D] activations,
    on one device: tokens in length-group order, a group's rows in order, a row's positions in order.

    token_source: each token's index in the flattened [rows * context] embeddings; positions: its position (for
    the positional embedding); row_start: each row's first token (in row order, so a row's position p is token
    row_start + p - prefix)."""

    token_source: torch.Tensor
    positions: torch.Tensor
    row_start: torch.Tensor
    groups: tuple[AttentionGroup, ...]

    @property
    def tokens(self) -> int:
        return self.token_source.shape[0]

    @property
    def group_tokens(self) -> list[int]:
        """The number of tokens of each group, in packed order (for `Tensor.split`)."""
        return [group.tokens for group in self.groups]


@dataclass(frozen=True)
class TextPlan:
    """How an encode of `rows` prompt rows runs (see the module docstring). `ends` holds each row's end (one past
    the last position computed); `groups`, per length group, its row indices and the end of its longest row."""

    rows: int
    prefix: int
    prefix_groups: int
    groups: tuple[tuple[tuple[int, ...], int], ...]
    ends: tuple[int, ...]
    context: int
    constant_tail: bool = False
    _on_device: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def rows_per_prefix(self) -> int:
        return self.rows // self.prefix_groups

    def packing(self, device: torch.device) -> TailPacking:
        """The plan's `TailPacking` on `device`, made once and kept."""
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = self._make_packing(device)
        return self._on_device[key]

    def _make_packing(self, device: torch.device) -> TailPacking:
        def on_device(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long, device=device)

        source, positions, row_start, groups = [], [], [0] * self.rows, []
        for rows, end in self.groups:
            start, length = len(source), end - self.prefix
            pad_source, valid = [], []
            for slot, row in enumerate(rows):
                row_start[row], first = len(source), len(source) - start
                own = self.ends[row] - self.prefix
                source += range(row * self.context + self.prefix, row * self.context + self.ends[row])
                positions += range(self.prefix, self.ends[row])
                pad_source += [first + min(t, own - 1) for t in range(length)]
                valid += range(slot * length, slot * length + own)
            padding = len(valid) < len(pad_source)
            owner = None
            if self.prefix and self.prefix_groups > 1:
                owner = on_device([row // self.rows_per_prefix for row in rows])
            groups.append(AttentionGroup(len(source) - start, len(rows), length,
                                         on_device(pad_source) if padding else None,
                                         on_device(valid) if padding else None, owner))
        return TailPacking(on_device(source), on_device(positions), on_device(row_start), tuple(groups))


def learned_end(layout: torch.Tensor) -> int:
    """One past the last position of `layout` [N, L] (see the module docstring) that holds a learned vector in
    any row; 0 when none does."""
    learned = (layout < 0).any(dim=0).nonzero()
    return int(learned[-1]) + 1 if len(learned) else 0


def plan_text(eot_indices: Sequence[int], context: int, *, truncate: bool = True, deep_prompt_tokens: int = 0,
              shared_prefix: int = 0, prefix_groups: int = 1, learned_positions_end: Optional[int] = None) -> TextPlan:
    """A plan for rows with these EOT positions (host ints) in embeddings of `context` positions.

    deep_prompt_tokens: the longest deep prompt (positions 1..n are always computed, so that replacing them
    never lengthens a row). shared_prefix: the caller's statement that positions 0..shared_prefix-1 are
    identical, as tensors, within each of `prefix_groups` consecutive equal blocks of rows (found with
    `leading_shared_positions`; 0: nothing shared). The prefix actually used stops before the earliest EOT
    (each row reads its EOT from its own tail), and is 0 when sharing would save fewer positions than the
    prefix's own pass costs (`_PREFIX_COST_IN_POSITIONS`; always for groups of a single row).
    learned_positions_end: the caller's statement that no position from there on holds a learned vector
    (`learned_end` of the layout; None: unknown), which makes the tails constant when the prefix covers it."""
    eot = [int(e) for e in eot_indices]
    rows = len(eot)
    if rows == 0:
        raise ValueError("no text rows to encode")
    if prefix_groups < 1 or rows % prefix_groups:
        raise ValueError(f"{rows} text rows cannot form {prefix_groups} prefix groups of equal size")
    if max(eot) >= context or min(eot) < 0:
        raise ValueError(f"EOT positions must lie in 0..{context - 1}; got {min(eot)}..{max(eot)}")
    prefix = max(min(shared_prefix, min(eot)), 0)
    if (rows - prefix_groups) * prefix <= _PREFIX_COST_IN_POSITIONS:  # positions saved: all rows but one per group
        prefix = 0
    if not truncate:
        ends = [context] * rows
        groups = ((tuple(range(rows)), context),)
    else:
        # Keep every position a deep prompt writes to, so replacement never lengthens the sequence.
        ends = [min(max(e + 1, 1 + deep_prompt_tokens), context) for e in eot]
        groups = tuple((tuple(group), max(ends[row] for row in group))
                       for group in _length_groups([end - prefix for end in ends]))
    constant_tail = prefix > 0 and learned_positions_end is not None and learned_positions_end <= prefix
    return TextPlan(rows, prefix, prefix_groups, groups, tuple(ends), context, constant_tail)
