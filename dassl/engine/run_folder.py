"""A run folder belongs to one run. The resolved config a run was started with, written to its `config.yaml`,
is the folder's identity: a later command may resume the run, evaluate it again or skip it as finished only
when every result-deciding key of its own config is the same. Otherwise it stops before touching the folder,
naming the keys that differ; `--force` (the scripts' FORCE=1) moves the old run aside and starts over.

What cannot change a run's numbers is listed once, in NON_RESULT_KEYS; every other key decides the result,
except where the `RunIdentity` of the command says it cannot have changed this run's numbers:
- a key absent from one config and at its default in the other (a method or a key added since the old run);
- a key of another method's config node (`TRAINER.<NODE>.*` of a node this run's trainer does not read).
So adding a method with keys of its own leaves every earlier run folder recognised.
"""
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, List, Optional, Tuple

import yaml

from dassl.utils.errors import UserError, one_line

# The resolved config of a run, written into its output folder by that run only: its identity, and what the
# inference API (api.py) and predict.py rebuild the trained model from.
CONFIG_FILE_NAME = "config.yaml"

# Keys (or key prefixes ending in ".") that cannot change a run's numbers: where files are read and written,
# how data is loaded, what is printed and how many checkpoints are kept, and the project's documented exact
# speed-ups (trainers/config.py: same numbers, less work or memory).
NON_RESULT_KEYS = (
    "OUTPUT_DIR",
    "RESUME",
    "DATASET.ROOT",
    "DATALOADER.NUM_WORKERS",
    "TRAIN.PRINT_FREQ",
    "TRAIN.CHECKPOINT_FREQ",
    "VERBOSE",
    "TEST.PER_CLASS_RESULT",
    "TEST.COMPUTE_CMAT",
    "MODEL.BACKBONE.CACHE_DIR",
    "TRAINER.SPEEDUPS.TEXT_TRUNCATION",
    "TRAINER.SPEEDUPS.EVAL_CACHE",
    "TRAINER.SPEEDUPS.TEXT_CHECKPOINTING",
    "TRAINER.SPEEDUPS.SHARED_PREFIX",
    "TRAINER.EVAL_TEXT_CHUNK",
)
_ABSENT = "<absent>"
_CHECKPOINT_FILE_PREFIXES = ("model.pth.tar-", "model-best.pth.tar")


class RunFolderError(UserError, FileExistsError):
    """The output folder holds another run (or one whose config cannot be told); the message says how to proceed."""


def decides_result(key: str) -> bool:
    return not any(key == k or (k.endswith(".") and key.startswith(k)) for k in NON_RESULT_KEYS)


def flatten(node: Any, prefix: str = "") -> Dict[str, Any]:
    """Dotted key -> value of a nested mapping (a CfgNode or a loaded YAML)."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    flat: Dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}{key}."))
    return flat


def config_values(cfg) -> Dict[str, Any]:
    """The config as config.yaml stores it (tuples become lists), flattened."""
    return flatten(yaml.safe_load(cfg.dump()))


def read_run_config(folder: str) -> Optional[Dict[str, Any]]:
    """The flattened config.yaml of `folder`, None when it has none; RunFolderError when it cannot be read."""
    path = osp.join(folder, CONFIG_FILE_NAME)
    if not osp.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise RunFolderError(f'cannot read the run config "{path}" ({one_line(str(e))}); '
                             f"{remedies(folder)}") from e
    if not isinstance(loaded, dict):
        raise RunFolderError(f'the run config "{path}" is not a mapping of config keys; {remedies(folder)}')
    return flatten(loaded)


@dataclass(frozen=True)
class RunIdentity:
    """What, besides NON_RESULT_KEYS, cannot decide this run's result. `defaults`: the flattened default config
    of this command (before any YAML or override); `other_nodes`: the TRAINER.<NODE> nodes of methods other
    than this run's trainer (empty when its own nodes are unknown: then every node counts)."""

    defaults: Dict[str, Any] = field(default_factory=dict)
    other_nodes: Collection[str] = ()

    def counts(self, key: str, old: Dict[str, Any], new: Dict[str, Any]) -> bool:
        if not decides_result(key) or any(key.startswith(f"TRAINER.{node}.") for node in self.other_nodes):
            return False
        old_value, new_value = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if old_value == new_value:
            return False
        if _ABSENT not in (old_value, new_value):
            return True
        # absent on one side and at its default on the other: the key did not exist when that run was made
        present = new_value if old_value == _ABSENT else old_value
        return self.defaults.get(key, _ABSENT) != present


def differing_keys(old: Dict[str, Any], new: Dict[str, Any],
                   identity: RunIdentity = RunIdentity()) -> List[Tuple[str, Any, Any]]:
    """(key, old value, new value) of every result-deciding key that differs, sorted by key."""
    return [(key, old.get(key, _ABSENT), new.get(key, _ABSENT)) for key in sorted(set(old) | set(new))
            if identity.counts(key, old, new)]


def checkpoint_files(folder: str) -> List[str]:
    """The checkpoint files of the models saved in `<folder>/<model name>/`."""
    if not osp.isdir(folder):
        return []
    found = []
    for name in sorted(os.listdir(folder)):
        model_dir = osp.join(folder, name)
        if osp.isdir(model_dir):
            found += [osp.join(model_dir, f) for f in sorted(os.listdir(model_dir)) if f.startswith(_CHECKPOINT_FILE_PREFIXES)]
    return found


def aside_path(folder: str) -> str:
    """The first free `<folder>.old-N`, where --force moves a run it replaces."""
    n = 1
    while osp.exists(f"{folder.rstrip(os.sep)}.old-{n}"):
        n += 1
    return f"{folder.rstrip(os.sep)}.old-{n}"


def remedies(folder: str) -> str:
    return (f"use another --output-dir, or add --force (scripts: FORCE=1) to move the old run aside to "
            f"{aside_path(folder)} and start over")


def check_run_folder(cfg, folder: str, role: str = "the output folder",
                     identity: RunIdentity = RunIdentity()) -> bool:
    """Whether `folder` already holds this config's run (True: resume or evaluate it again; False: it holds no
    run). Raises RunFolderError, before anything is written, when it holds another run or checkpoints whose
    config is unknown."""
    old = read_run_config(folder)
    if old is None:
        found = checkpoint_files(folder)
        if not found:
            return False
        raise RunFolderError(
            f'{role} "{folder}" holds checkpoints ({found[0]}, ...) but no {CONFIG_FILE_NAME}, so it cannot be told '
            f"whether they were trained with this config (a folder of another program or an older version); "
            f"{remedies(folder)}")
    differences = differing_keys(old, config_values(cfg), identity)
    if differences:
        listed = ", ".join(f"{key} {old_value!r} -> {new_value!r}" for key, old_value, new_value in differences)
        raise RunFolderError(f'{role} "{folder}" holds another run: its {CONFIG_FILE_NAME} differs in {listed}; '
                             f"{remedies(folder)}")
    return True


def holds_run(folder: str) -> bool:
    return osp.isfile(osp.join(folder, CONFIG_FILE_NAME)) or bool(checkpoint_files(folder))


def move_aside(folder: str) -> Optional[str]:
    """--force: rename a folder that holds a run to `<folder>.old-N` (never deleted); returns the new path, None
    when there was no run to move."""
    if not holds_run(folder):
        return None
    target = aside_path(folder)
    os.rename(folder, target)
    return target
