"""Value ranges of the Dassl config keys, checked once the config is merged and before anything is built, so
that a value outside its meaning is named with its valid range instead of failing deep inside torch (or, worse,
running: a 0-epoch "training" would test the untrained model and look finished).

Ranges follow the keys' definitions in Dassl and the official scripts: `DATASET.NUM_SHOTS` < 1 means "all
images" (Dassl's few-shot sampler returns the data unchanged), `OPTIM.WARMUP_EPOCH` <= 0 means no warm-up,
`TRAIN.CHECKPOINT_FREQ` takes any integer (docs/RELIABILITY.md). The method keys (N_CTX, prompt depths) are
checked by each trainer's `check_cfg`, which knows its own.
"""
from typing import Tuple

from .merge import ConfigError

# (key, smallest valid value, what it means) of integer keys with a lower bound.
_MINIMUMS: Tuple[Tuple[str, int, str], ...] = (
    ("DATALOADER.TRAIN_X.BATCH_SIZE", 1, "images per training batch"),
    ("DATALOADER.TRAIN_U.BATCH_SIZE", 1, "images per unlabelled batch"),
    ("DATALOADER.TEST.BATCH_SIZE", 1, "images per evaluation batch"),
    ("DATALOADER.NUM_WORKERS", 0, "data-loading processes; 0 loads in the main process"),
    ("DATALOADER.K_TRANSFORMS", 1, "augmented views per image"),
    ("TRAIN.PRINT_FREQ", 1, "batches between progress lines"),
)


def _value(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def check_values(cfg, training: bool) -> None:
    """Raise ConfigError naming the first key whose value is out of its range. `training`: the run trains (an
    evaluation-only run ignores OPTIM.MAX_EPOCH)."""
    for key, minimum, meaning in _MINIMUMS:
        value = _value(cfg, key)
        if value < minimum:
            raise ConfigError(f"{key} must be >= {minimum} ({meaning}); got {value}")
    if training and cfg.OPTIM.MAX_EPOCH < 1:
        raise ConfigError(f"OPTIM.MAX_EPOCH must be >= 1 to train; got {cfg.OPTIM.MAX_EPOCH} (to evaluate a model "
                          "without training, use --eval-only)")
    if training and cfg.OPTIM.LR <= 0:
        raise ConfigError(f"OPTIM.LR must be > 0 to train; got {cfg.OPTIM.LR}")
    size = tuple(cfg.INPUT.SIZE)
    if len(size) != 2 or any(not isinstance(s, int) or s < 1 for s in size):
        raise ConfigError(f"INPUT.SIZE must be two positive integers (height, width); got {size}")
    if not 0 <= cfg.DATASET.VAL_PERCENT < 1:
        raise ConfigError(f"DATASET.VAL_PERCENT must be in [0, 1); got {cfg.DATASET.VAL_PERCENT}")
