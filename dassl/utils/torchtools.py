"""Checkpoint files: atomic saves, safe loads, resume, partial weight loading.

Checkpoints written here hold only tensors, numbers, strings and containers, so they load with
`torch.load(weights_only=True)`. Official Dassl checkpoints also pickle the warm-up scheduler's successor
(a torch scheduler bound to an optimizer copy); they load through `DASSL_CHECKPOINT_GLOBALS`, the exact set
of classes those pickles name, allow-listed with `torch.serialization.safe_globals` — nothing else is trusted.
"""
import os
import os.path as osp
import pickle
import shutil
import tempfile
import warnings
from collections import OrderedDict
from typing import Any, Dict, Iterable, Optional

import torch
import torch.nn as nn

from dassl.optim.lr_scheduler import ConstantWarmupScheduler, LinearWarmupScheduler

from .rng import restore_rng_state
from .tools import mkdir_if_missing

def _optimizer_state_as_dict(default_factory=None) -> dict:
    # Stands in for collections.defaultdict (the optimizer copy's `state`), which the weights_only unpickler
    # cannot fill; that stale copy is never stepped, so a plain dict is enough.
    return {}


# Classes an official Dassl checkpoint pickles (scheduler wrapper -> successor -> its SGD copy with a
# defaultdict state). Used only for the second, allow-listed load attempt.
DASSL_CHECKPOINT_GLOBALS = [
    ConstantWarmupScheduler,
    LinearWarmupScheduler,
    torch.optim.lr_scheduler.CosineAnnealingLR,
    torch.optim.lr_scheduler.StepLR,
    torch.optim.lr_scheduler.MultiStepLR,
    torch.optim.SGD,
    (_optimizer_state_as_dict, "collections.defaultdict"),
    dict,
]


def _atomic_write(path: str, write) -> None:
    # temp file in the target folder + fsync + os.replace: readers see the old file or the complete new one
    directory = osp.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=osp.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def _strip_module_prefix(state_dict: Dict[str, Any]) -> "OrderedDict[str, Any]":
    # DataParallel / DDP wrap the model as `.module`
    return OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in state_dict.items())


def save_checkpoint(
    state: Dict[str, Any],
    save_dir: str,
    is_best: bool = False,
    remove_module_from_keys: bool = True,
    model_name: str = "",
) -> str:
    """Write `state` to `<save_dir>/<model_name or model.pth.tar-<epoch>>` atomically, point the
    `<save_dir>/checkpoint` file at it, and copy it to `model-best.pth.tar` when `is_best`. Returns the path."""
    mkdir_if_missing(save_dir)
    if remove_module_from_keys:
        state = dict(state, state_dict=_strip_module_prefix(state["state_dict"]))
    fpath = osp.join(save_dir, model_name or f"model.pth.tar-{state['epoch']}")
    _atomic_write(fpath, lambda f: torch.save(state, f))
    print(f"Checkpoint saved to {fpath}")
    _atomic_write(osp.join(save_dir, "checkpoint"), lambda f: f.write(f"{osp.basename(fpath)}\n".encode()))
    if is_best:
        best_fpath = osp.join(save_dir, "model-best.pth.tar")
        def copy_saved(f) -> None:
            with open(fpath, "rb") as src:
                shutil.copyfileobj(src, f)

        _atomic_write(best_fpath, copy_saved)
        print(f'Best checkpoint saved to "{best_fpath}"')
    return fpath


def load_checkpoint(fpath: Optional[str]) -> Dict[str, Any]:
    """Load a checkpoint with weights_only=True; official Dassl files fall back to the allow-list above."""
    if fpath is None:
        raise ValueError("File path is None")
    fpath = osp.abspath(osp.expanduser(fpath))
    if not osp.exists(fpath):
        raise FileNotFoundError(f'File is not found at "{fpath}"')
    map_location = None if torch.cuda.is_available() else "cpu"
    try:
        return torch.load(fpath, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        pass
    try:
        with torch.serialization.safe_globals(DASSL_CHECKPOINT_GLOBALS):
            return torch.load(fpath, map_location=map_location, weights_only=True)
    except Exception:
        print(f'Unable to load checkpoint from "{fpath}"')
        raise


def trainable_state_dict(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """model.state_dict() without frozen parameters (requires_grad=False); buffers are kept."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return OrderedDict((k, v) for k, v in model.state_dict().items() if k not in frozen)


def load_trainable_state_dict(model: nn.Module, state_dict: Dict[str, Any], source: str) -> None:
    """Load a (possibly frozen-stripped) state dict non-strictly, but fail, naming `source` and the keys, when a
    trainable parameter is missing or a shape differs — e.g. a checkpoint of another trainer or class count."""
    state_dict = _strip_module_prefix(state_dict)
    own = model.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and torch.is_tensor(v) and v.shape != own[k].shape
    ]
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    missing = [k for k in trainable if k not in state_dict]
    if mismatched or missing:
        problems = []
        if missing:
            problems.append(f"missing trainable parameters: {missing}")
        if mismatched:
            problems.append(f"shape mismatches: {mismatched}")
        raise RuntimeError(f'Checkpoint "{source}" does not fit the model ({"; ".join(problems)})')
    unexpected = [k for k in state_dict if k not in own]
    if unexpected:
        warnings.warn(f'Checkpoint "{source}" has keys the model does not use (ignored): {unexpected}')
    model.load_state_dict(state_dict, strict=False)


def resume_from_checkpoint(fdir: str, model: nn.Module, optimizer=None, scheduler=None) -> int:
    """Load the checkpoint named in `<fdir>/checkpoint` into model / optimizer / scheduler (and the RNG states
    when stored) and return its epoch, i.e. the number of finished epochs."""
    pointer = osp.join(fdir, "checkpoint")
    if not osp.isfile(pointer):
        raise FileNotFoundError(f'No "checkpoint" pointer file in "{fdir}" (it names the file to resume from)')
    with open(pointer, "r") as f:
        model_name = f.readline().strip("\n")
    fpath = osp.join(fdir, model_name)
    print(f'Loading checkpoint from "{fpath}"')
    checkpoint = load_checkpoint(fpath)
    load_trainable_state_dict(model, checkpoint["state_dict"], fpath)
    print("Loaded model weights")
    if optimizer is not None and checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        print("Loaded optimizer")
    if scheduler is not None and checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
        print("Loaded scheduler")
    if checkpoint.get("rng_state") is not None:
        restore_rng_state(checkpoint["rng_state"])
    start_epoch = checkpoint["epoch"]
    print(f"Previous epoch: {start_epoch}")
    return start_epoch


def load_pretrained_weights(model: nn.Module, weight_path: str) -> None:
    """Copy every tensor of the checkpoint whose key and shape match the model; report what was skipped."""
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    state_dict = _strip_module_prefix(state_dict)
    model_dict = model.state_dict()
    matched, discarded = OrderedDict(), []
    for k, v in state_dict.items():
        if k in model_dict and torch.is_tensor(v) and model_dict[k].size() == v.size():
            matched[k] = v
        else:
            discarded.append(k)
    model_dict.update(matched)
    model.load_state_dict(model_dict)
    if not matched:
        warnings.warn(
            f'The pretrained weights "{weight_path}" cannot be loaded, please check the key names manually'
        )
    else:
        print(f'Successfully loaded pretrained weights from "{weight_path}"')
        if discarded:
            print(f"Layers discarded due to unmatched keys or size: {discarded}")


def count_num_param(model: Optional[nn.Module] = None, params: Optional[Iterable[torch.Tensor]] = None) -> int:
    """Total number of elements of `model`'s parameters (or of `params`)."""
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    if params is not None:
        return sum(p.numel() for p in params)
    raise ValueError("count_num_param needs model or params")
