"""`build_lr_scheduler(optimizer, optim_cfg)`: torch's StepLR / MultiStepLR / CosineAnnealingLR, optionally
behind Dassl's warm-up wrapper. Trainers step it once per epoch (on the last batch).

With a 1-epoch constant warm-up and cosine (the method configs) the LR of epoch e is WARMUP_CONS_LR for
e = 0, then LR * (1 + cos(pi * (e - 1) / MAX_EPOCH)) / 2: the cosine starts one epoch late.

Differences from Dassl 0.6.3 that do not change the LR sequence: the wrapper works on current PyTorch (no
positional `verbose`), its state_dict holds the successor's *state* instead of the successor object (so
checkpoints load with weights_only=True and a resumed successor keeps driving the live optimizer), and
load_state_dict also accepts Dassl's pickled successor object. The class names are kept so that official
checkpoints, which pickle these classes, resolve.
"""
from typing import Any, Dict, List

import torch
from torch.optim.lr_scheduler import LRScheduler

AVAI_SCHEDS = ["single_step", "multi_step", "cosine"]


class _BaseWarmupScheduler(LRScheduler):
    """Runs its own warm-up LR for `warmup_epoch` steps, then delegates every step to `successor`."""

    def __init__(self, optimizer: torch.optim.Optimizer, successor: LRScheduler, warmup_epoch: int, last_epoch: int = -1):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        super().__init__(optimizer, last_epoch)

    def warmup_lr(self) -> List[float]:
        raise NotImplementedError

    def get_lr(self) -> List[float]:
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return self.warmup_lr()

    def step(self, epoch=None) -> None:
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)

    def state_dict(self) -> Dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "successor")}
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        state = dict(state_dict)
        successor_state = state.pop("successor", None)
        if isinstance(successor_state, LRScheduler):
            # an official Dassl checkpoint pickles the successor object (bound to a stale optimizer copy)
            successor_state = successor_state.state_dict()
        self.__dict__.update(state)
        if successor_state is not None:
            self.successor.load_state_dict(successor_state)


class ConstantWarmupScheduler(_BaseWarmupScheduler):
    """Warm-up at a constant `cons_lr`."""

    def __init__(self, optimizer, successor, warmup_epoch: int, cons_lr: float, last_epoch: int = -1):
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def warmup_lr(self) -> List[float]:
        return [self.cons_lr for _ in self.base_lrs]


class LinearWarmupScheduler(_BaseWarmupScheduler):
    """Warm-up at `min_lr` for step 0, then base_lr * step / warmup_epoch."""

    def __init__(self, optimizer, successor, warmup_epoch: int, min_lr: float, last_epoch: int = -1):
        self.min_lr = min_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def warmup_lr(self) -> List[float]:
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]


def _main_scheduler(optimizer, optim_cfg) -> LRScheduler:
    name = optim_cfg.LR_SCHEDULER
    stepsize = optim_cfg.STEPSIZE
    if name == "single_step":
        if isinstance(stepsize, (list, tuple)):
            stepsize = stepsize[-1]
        if not isinstance(stepsize, int):
            raise TypeError(f"OPTIM.STEPSIZE must be an int (or a list of ints) for single_step, got {stepsize!r}")
        if stepsize <= 0:
            stepsize = optim_cfg.MAX_EPOCH
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=stepsize, gamma=optim_cfg.GAMMA)
    if name == "multi_step":
        if not isinstance(stepsize, (list, tuple)):
            raise TypeError(f"OPTIM.STEPSIZE must be a list of ints for multi_step, got {stepsize!r}")
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(stepsize), gamma=optim_cfg.GAMMA)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=float(optim_cfg.MAX_EPOCH))


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg) -> LRScheduler:
    """The scheduler named by OPTIM.LR_SCHEDULER, wrapped in a warm-up when OPTIM.WARMUP_EPOCH > 0."""
    if optim_cfg.LR_SCHEDULER not in AVAI_SCHEDS:
        raise ValueError(f"OPTIM.LR_SCHEDULER must be one of {AVAI_SCHEDS}, but got {optim_cfg.LR_SCHEDULER!r}")
    # the successor is built first so that it records the full LR as its base LR
    scheduler = _main_scheduler(optimizer, optim_cfg)
    if optim_cfg.WARMUP_EPOCH <= 0:
        return scheduler

    if not optim_cfg.WARMUP_RECOUNT:
        scheduler.last_epoch = optim_cfg.WARMUP_EPOCH
    if optim_cfg.WARMUP_TYPE == "constant":
        return ConstantWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_CONS_LR)
    if optim_cfg.WARMUP_TYPE == "linear":
        return LinearWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_MIN_LR)
    raise ValueError(f"OPTIM.WARMUP_TYPE must be 'constant' or 'linear', but got {optim_cfg.WARMUP_TYPE!r}")
