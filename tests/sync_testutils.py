"""Counting, without a GPU, the calls that make the host wait for the device.

On CUDA these read a device value back to the host (`.item()`, `.tolist()`, `bool(t)`, `int(t)`, a
data-dependent output size such as `nonzero` / `unique` / boolean-mask indexing), which blocks until every
queued kernel has run. On CPU they are free, so a CPU test cannot time them; it can count them: while
`count_host_syncs()` is active, every such call on any tensor is recorded by name.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch

SYNCING_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "numpy", "cpu")
SYNCING_FUNCTIONS = ("unique", "nonzero", "argwhere", "masked_select")


def _has_bool_mask(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(part, torch.Tensor) and part.dtype == torch.bool for part in parts)


@contextlib.contextmanager
def count_host_syncs() -> Iterator[list[str]]:
    """Yields the list of syncing calls made inside the block (names, in call order)."""
    calls: list[str] = []
    originals = [(torch.Tensor, name, getattr(torch.Tensor, name)) for name in SYNCING_METHODS + ("__getitem__",)]
    originals += [(torch, name, getattr(torch, name)) for name in SYNCING_FUNCTIONS]

    def recording(name, original):
        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            if name != "__getitem__" or _has_bool_mask(args[1]):
                calls.append(name)
            return original(*args, **kwargs)
        return wrapper

    for owner, name, original in originals:
        setattr(owner, name, recording(name, original))
    try:
        yield calls
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
