"""Checkpoint files: atomic saves, safe loads, resume with fallback, partial weight loading.

Checkpoints written here hold only tensors, numbers, strings and containers, so they load with
`torch.load(weights_only=True)`. Official Dassl checkpoints also pickle the warm-up scheduler's successor
(a torch scheduler bound to an optimizer copy); they load through `DASSL_CHECKPOINT_GLOBALS`, the exact set
of classes those pickles name, allow-listed with `torch.serialization.safe_globals` — nothing else is trusted.
Our checkpoints also carry a SHA-256 of their content, so a damaged file is refused by name instead of
loading wrong numbers; resuming then falls back to the newest older checkpoint (docs/RELIABILITY.md).
"""
import hashlib
import os
import os.path as osp
import pickle
import re
import shutil
import warnings
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn

from dassl.optim.lr_scheduler import ConstantWarmupScheduler, LinearWarmupScheduler

from .atomic import atomic_write, write_text_atomic
from .errors import UserError
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


def _strip_module_prefix(state_dict: Dict[str, Any]) -> "OrderedDict[str, Any]":
    # DataParallel / DDP wrap the model as `.module`
    return OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in state_dict.items())


CHECKPOINT_POINTER = "checkpoint"
# Regular (per-epoch) checkpoint files; resume falls back through them, newest first.
_EPOCH_FILE = re.compile(r"^model\.pth\.tar-(\d+)$")
# Key of the content digest that our checkpoints carry; official files lack it and are not checked.
DIGEST_KEY = "content_sha256"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file that cannot be used: empty, truncated, corrupt, or not a checkpoint at all."""


def _feed_digest(digest, value: Any) -> None:
    # A canonical walk over everything in the checkpoint: keys, tensor dtypes / shapes / bytes, plain values.
    # torch's zip reader does not verify its CRCs, so a flipped bit would otherwise load silently.
    if torch.is_tensor(value):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"dict {len(value)};".encode())
        for key in sorted(value, key=repr):
            digest.update(f"{key!r}:".encode())
            _feed_digest(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__} {len(value)};".encode())
        for item in value:
            _feed_digest(digest, item)
    else:
        digest.update(f"{type(value).__name__} {value!r};".encode())


def content_digest(state: Dict[str, Any]) -> str:
    """SHA-256 over the content of a checkpoint dict (its digest entry excluded)."""
    digest = hashlib.sha256()
    _feed_digest(digest, {k: v for k, v in state.items() if k != DIGEST_KEY})
    return digest.hexdigest()


def save_checkpoint(
    state: Dict[str, Any],
    save_dir: str,
    is_best: bool = False,
    remove_module_from_keys: bool = True,
    model_name: str = "",
) -> str:
    """Write `state` (plus its content digest) to `<save_dir>/<model_name or model.pth.tar-<epoch>>`
    atomically, then point the `<save_dir>/checkpoint` file at it, and copy it to `model-best.pth.tar` when
    `is_best`. Returns the path. A crash at any moment leaves the previous checkpoint and pointer intact."""
    mkdir_if_missing(save_dir)
    if remove_module_from_keys:
        state = dict(state, state_dict=_strip_module_prefix(state["state_dict"]))
    state = dict(state)
    state[DIGEST_KEY] = content_digest(state)
    fpath = osp.join(save_dir, model_name or f"model.pth.tar-{state['epoch']}")
    atomic_write(fpath, lambda f: torch.save(state, f))
    print(f"Checkpoint saved to {fpath}")
    write_text_atomic(osp.join(save_dir, CHECKPOINT_POINTER), f"{osp.basename(fpath)}\n")
    if is_best:
        best_fpath = osp.join(save_dir, "model-best.pth.tar")

        def copy_saved(f) -> None:
            with open(fpath, "rb") as src:
                shutil.copyfileobj(src, f)

        atomic_write(best_fpath, copy_saved)
        print(f'Best checkpoint saved to "{best_fpath}"')
    return fpath


def _refused_class(error: pickle.UnpicklingError) -> bool:
    # torch's weights_only unpickler names a refused class as "... GLOBAL module.name ..."
    return "GLOBAL" in str(error)


def _torch_load(fpath: str) -> Any:
    # Always onto the CPU: a checkpoint holds megabytes of prompts, which load_state_dict then copies onto
    # each model's own device. Loading "as saved" would put rank 0's cuda:0 tensors on GPU 0 in every process
    # of a distributed run (and on the GPU in a --cpu run). weights_only first; an official Dassl file
    # (pickled scheduler objects) needs the allow-list.
    try:
        return torch.load(fpath, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not _refused_class(error):
            raise  # damaged bytes, not a class outside the default allow-list
    with torch.serialization.safe_globals(DASSL_CHECKPOINT_GLOBALS):
        return torch.load(fpath, map_location="cpu", weights_only=True)


# Messages of load failures that come from the machine (memory, a busy or failing device), not from the file.
_MACHINE_FAILURE = re.compile(r"out of memory|can't allocate memory|CUDA error|CUDA-capable device|busy or unavailable",
                              re.IGNORECASE)


def _is_machine_failure(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or bool(_MACHINE_FAILURE.search(str(error)))


def load_checkpoint(fpath: Optional[str]) -> Dict[str, Any]:
    """Load a checkpoint onto the CPU with weights_only=True (official Dassl files through the allow-list above).

    Raises FileNotFoundError when it is missing, pickle.UnpicklingError when it names a class outside the
    allow-list (never executed), and CheckpointError naming the file when it is empty, truncated or corrupt.
    A failure of the machine rather than the file (out of memory, a device error) is raised as it is, so
    that a good checkpoint is never reported as damaged nor skipped on resume.
    """
    if fpath is None:
        raise ValueError("File path is None")
    fpath = osp.abspath(osp.expanduser(fpath))
    if not osp.exists(fpath):
        raise FileNotFoundError(f'File is not found at "{fpath}"')
    if osp.getsize(fpath) == 0:
        raise CheckpointError(f'Checkpoint "{fpath}" is empty (0 bytes); delete it')
    try:
        checkpoint = _torch_load(fpath)
    except pickle.UnpicklingError as error:
        if _refused_class(error):
            raise pickle.UnpicklingError(
                f'Refusing to load "{fpath}": it pickles a class outside the allow-list of '
                f"dassl.utils.torchtools.DASSL_CHECKPOINT_GLOBALS ({error})"
            ) from error
        raise CheckpointError(f'Checkpoint "{fpath}" is truncated or corrupt ({error}); delete it') from error
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as error:
        if _is_machine_failure(error):
            raise
        raise CheckpointError(
            f'Checkpoint "{fpath}" is truncated or corrupt ({type(error).__name__}: {error}); delete it'
        ) from error
    if isinstance(checkpoint, dict) and DIGEST_KEY in checkpoint and checkpoint[DIGEST_KEY] != content_digest(checkpoint):
        raise CheckpointError(f'Checkpoint "{fpath}" is corrupt: its content does not match its SHA-256; delete it')
    return checkpoint


def epoch_checkpoints(fdir: str) -> List[Tuple[int, str]]:
    """(epoch, path) of the `model.pth.tar-<epoch>` files in `fdir`, newest first."""
    if not osp.isdir(fdir):
        return []
    found = [(int(m.group(1)), osp.join(fdir, name)) for name in os.listdir(fdir) for m in [_EPOCH_FILE.match(name)] if m]
    return sorted(found, reverse=True)


def resume_candidates(fdir: str) -> List[str]:
    """Checkpoint files to resume from, in order of preference: the one the `checkpoint` pointer names (the
    last one saved, Dassl's rule), then the per-epoch files, newest first."""
    candidates = []
    pointer = osp.join(fdir, CHECKPOINT_POINTER)
    if osp.isfile(pointer):
        with open(pointer, "r") as f:
            name = f.readline().strip("\n")
        if name and osp.isfile(osp.join(fdir, name)):
            candidates.append(osp.join(fdir, name))
    candidates += [path for _, path in epoch_checkpoints(fdir) if path not in candidates]
    return candidates


def load_resume_checkpoint(fdir: str, at_most_epoch: Optional[int] = None) -> Tuple[str, Dict[str, Any]]:
    """(path, checkpoint) of the newest usable checkpoint in `fdir` (optionally of epoch <= `at_most_epoch`).
    An unusable one (e.g. damaged on disk) is reported and skipped; CheckpointError when none is usable,
    FileNotFoundError when `fdir` holds no checkpoint at all."""
    candidates = resume_candidates(fdir)
    if not candidates:
        raise FileNotFoundError(f'No checkpoint to resume from in "{fdir}" (no "checkpoint" pointer, no model.pth.tar-N)')
    problems = []
    for path in candidates:
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as error:
            warnings.warn(f"{error}; falling back to an older checkpoint")
            problems.append(str(error))
            continue
        if at_most_epoch is None or checkpoint["epoch"] <= at_most_epoch:
            return path, checkpoint
    limit = "" if at_most_epoch is None else f" of epoch <= {at_most_epoch}"
    raise CheckpointError(
        f'No usable checkpoint{limit} in "{fdir}" to resume from: ' + "; ".join(problems or ["none matches"])
        + ". Delete the folder to train from scratch."
    )


def restore_checkpoint(checkpoint: Dict[str, Any], source: str, model: nn.Module, optimizer=None, scheduler=None,
                       scaler=None) -> int:
    """Load a checkpoint's weights, optimizer, scheduler and GradScaler state and RNG states (when stored);
    returns its epoch, i.e. the number of finished epochs."""
    print(f'Loading checkpoint from "{source}"')
    load_trainable_state_dict(model, checkpoint["state_dict"], source)
    print("Loaded model weights")
    if optimizer is not None and checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        print("Loaded optimizer")
    if scheduler is not None and checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
        print("Loaded scheduler")
    if scaler is not None:
        if checkpoint.get("grad_scaler"):
            scaler.load_state_dict(checkpoint["grad_scaler"])
            print("Loaded GradScaler")
        else:
            warnings.warn(f'Checkpoint "{source}" holds no GradScaler state (saved by an older version or without amp): '
                          "the loss scale restarts at its initial value, so the resumed run can differ slightly "
                          "from an uninterrupted one")
    if checkpoint.get("rng_state") is not None:
        restore_rng_state(checkpoint["rng_state"])
    start_epoch = checkpoint["epoch"]
    print(f"Previous epoch: {start_epoch}")
    return start_epoch


def resume_from_checkpoint(fdir: str, model: nn.Module, optimizer=None, scheduler=None, scaler=None) -> int:
    """Resume model / optimizer / scheduler / GradScaler (and RNG states) from the newest usable checkpoint in
    `fdir` (the one `<fdir>/checkpoint` names, else the newest older one); returns the number of finished epochs."""
    path, checkpoint = load_resume_checkpoint(fdir)
    return restore_checkpoint(checkpoint, path, model, optimizer, scheduler, scaler)


def missing_model_message(directory: str, name: str, model_file: str) -> str:
    """Why `<directory>/<name>/<model_file>` is not there, and what is there instead (for load_model)."""
    path = osp.join(directory, name, model_file)
    if not osp.isdir(directory):
        return f'Model not found at "{path}": the directory "{directory}" does not exist (check --model-dir)'
    folder = osp.join(directory, name)
    if osp.isdir(folder):
        present = sorted(f for f in os.listdir(folder) if _EPOCH_FILE.match(f) or f == "model-best.pth.tar")
        return f'Model not found at "{path}"; "{folder}" holds: {", ".join(present) or "no checkpoint"} (check --load-epoch)'
    others = sorted(d for d in os.listdir(directory) if resume_candidates(osp.join(directory, d)))
    if others:
        return (f'Model not found at "{path}": "{directory}" holds checkpoints of {", ".join(others)}, not of {name} — '
                "saved by another trainer?")
    return f'Model not found at "{path}": "{directory}" holds no checkpoint (check --model-dir)'


def prune_epoch_checkpoints(fdir: str, keep: int) -> None:
    """Delete all but the newest `keep` per-epoch checkpoints in `fdir` (never the one the pointer names)."""
    pointed = resume_candidates(fdir)[:1]
    for _, path in epoch_checkpoints(fdir)[keep:]:
        if path not in pointed:
            os.remove(path)


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
        raise CheckpointError(
            f'Checkpoint "{source}" does not fit the model ({"; ".join(problems)}); was it saved by another trainer, '
            "config or class count? Use another output directory, or delete it to train from scratch"
        )
    unexpected = [k for k in state_dict if k not in own]
    if unexpected:
        warnings.warn(f'Checkpoint "{source}" has keys the model does not use (ignored): {unexpected}')
    model.load_state_dict(state_dict, strict=False)


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
