"""The trainer life-cycle: `TrainerBase` (registered models, checkpoints, LR stepping, tensorboard),
`SimpleTrainer` (config, data, evaluation, resume) and `TrainerX` (the labelled-data epoch loop).

A method subclasses TrainerX, implements `build_model` (registering its model, optimizer and scheduler
with `register_model`) and `forward_backward(batch)` (returning a dict of losses), and steps the scheduler
itself on the last batch of each epoch (`update_lr()`), as the official trainers do.
"""
import datetime
import os.path as osp
import time
import warnings
from collections import OrderedDict
from typing import Dict, List, Optional, Union

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from dassl.data import DataManager
from dassl.engine.loss_log import LoggedStep, PendingLosses, check_finite, loss_detail, nonfinite_loss_error
from dassl.evaluation import build_evaluator
from dassl.utils import (
    AverageMeter,
    CheckpointError,
    MetricMeter,
    capture_rng_state,
    load_checkpoint,
    load_resume_checkpoint,
    load_trainable_state_dict,
    missing_model_message,
    mkdir_if_missing,
    prune_epoch_checkpoints,
    remove_stale_temp_files,
    restore_checkpoint,
    resume_candidates,
    save_checkpoint,
    tolist_if_not,
    trainable_state_dict,
)
from dassl.utils.distributed import (
    average_over_processes,
    barrier,
    decorrelate_rng,
    evaluate_gathered,
    is_distributed,
    is_main_process,
    shard_loader,
    synchronize_trainable_parameters,
    training_device,
)
from dassl.utils.errors import InputError


class TrainerBase:
    """Holds the registered models with their optimizers and schedulers, keyed by name."""

    def __init__(self) -> None:
        self._models: "OrderedDict[str, nn.Module]" = OrderedDict()
        self._optims: "OrderedDict[str, Optional[torch.optim.Optimizer]]" = OrderedDict()
        self._scheds: "OrderedDict[str, object]" = OrderedDict()
        self._scalers: "OrderedDict[str, Optional[torch.amp.GradScaler]]" = OrderedDict()
        self._writer = None

    def register_model(self, name: str = "model", model: Optional[nn.Module] = None, optim=None, sched=None,
                       scaler: Optional[torch.amp.GradScaler] = None) -> None:
        """Register `model` (and its optimizer / scheduler, and the GradScaler of a mixed-precision run) under
        `name`, which is also its checkpoint folder; all of their states are checkpointed."""
        if self.__dict__.get("_models") is None:
            raise AttributeError("Cannot assign model before super().__init__() call")
        if self.__dict__.get("_optims") is None:
            raise AttributeError("Cannot assign optim before super().__init__() call")
        if self.__dict__.get("_scheds") is None:
            raise AttributeError("Cannot assign sched before super().__init__() call")
        if name in self._models:
            raise KeyError(f"A model named {name!r} is already registered")
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched
        self._scalers[name] = scaler

    def get_model_names(self, names: Union[None, str, List[str]] = None) -> List[str]:
        registered = list(self._models.keys())
        if names is None:
            return registered
        names = tolist_if_not(names)
        for name in names:
            if name not in registered:
                raise KeyError(f"No model registered as {name!r}; registered: {registered}")
        return names

    def save_model(self, epoch: int, directory: str, is_best: bool = False, val_result=None, model_name: str = "") -> None:
        """Save each registered model to `<directory>/<name>/` (epoch stored 1-based). Frozen parameters are left
        out (checkpoints hold the trained prompts, not the frozen backbone); the RNG states are stored so that
        a resumed run continues exactly. In a distributed run rank 0 writes and the others wait for it."""
        if is_main_process():
            self._write_checkpoints(epoch, directory, is_best, val_result, model_name)
        barrier()

    def _write_checkpoints(self, epoch: int, directory: str, is_best: bool, val_result, model_name: str) -> None:
        rng_state = capture_rng_state()
        for name in self.get_model_names():
            optim, sched, scaler = self._optims[name], self._scheds[name], self._scalers[name]
            state = {
                "state_dict": trainable_state_dict(self._models[name]),
                "epoch": epoch + 1,
                "optimizer": optim.state_dict() if optim is not None else None,
                "scheduler": sched.state_dict() if sched is not None else None,
                # the loss scale and its growth counter: without them a resumed amp run restarts at the
                # initial scale and skips steps the uninterrupted run took
                "grad_scaler": scaler.state_dict() if scaler is not None else None,
                "val_result": val_result,
                "rng_state": rng_state,
                # best_val runs compare later epochs against it, so a resumed run must know it
                "best_val_result": getattr(self, "best_result", None),
            }
            save_checkpoint(state, osp.join(directory, name), is_best=is_best, model_name=model_name)

    def resume_model_if_exist(self, directory: str) -> int:
        """Resume every registered model from the newest usable checkpoint in `<directory>/<name>/` (damaged
        files are reported and skipped); returns the number of finished epochs (0 when training from scratch,
        e.g. when a run was killed before its first checkpoint was complete, or when no model is registered)."""
        folders = OrderedDict((name, osp.join(directory, name)) for name in self.get_model_names())
        if not folders:
            # nothing to resume; the steps below need at least one model (Dassl fails here on an unbound variable)
            print("No model registered, nothing to resume")
            return 0
        if is_main_process():  # the one writer cleans up, so ranks never race to delete the same file
            for folder in folders.values():
                remove_stale_temp_files(folder)  # left by a run killed mid-write
        barrier()
        if any(not resume_candidates(folder) for folder in folders.values()):
            print("No checkpoint found, train from scratch")
            return 0
        print(f"Found checkpoint at {directory} (will resume training)")
        loaded = OrderedDict((name, load_resume_checkpoint(folder)) for name, folder in folders.items())
        # a run killed between saving two models leaves them an epoch apart: resume all from the older epoch
        start_epoch = min(checkpoint["epoch"] for _, checkpoint in loaded.values())
        for name, (path, checkpoint) in loaded.items():
            if checkpoint["epoch"] != start_epoch:
                path, checkpoint = load_resume_checkpoint(folders[name], at_most_epoch=start_epoch)
                if checkpoint["epoch"] != start_epoch:
                    raise CheckpointError(
                        f'"{path}" is of epoch {checkpoint["epoch"]} but the other models resume from epoch '
                        f"{start_epoch}; delete {directory} to train from scratch"
                    )
            restore_checkpoint(checkpoint, path, self._models[name], self._optims[name], self._scheds[name],
                               self._scalers[name])
            if checkpoint.get("best_val_result") is not None:
                self.best_result = checkpoint["best_val_result"]
        return start_epoch

    def checkpoints_to_load(self, directory: str, epoch: Optional[int] = None):
        """Yield (name, path, checkpoint) of `model.pth.tar-<epoch>` (or `model-best.pth.tar` when epoch is
        None) for every registered model; nothing, with Dassl's note, when no directory is given."""
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        if osp.isfile(directory):
            # one checkpoint file named: exactly that file is loaded, whatever its name or folder
            names = self.get_model_names()
            if len(names) != 1:
                raise InputError(f'"{directory}" is one checkpoint file, but {type(self).__name__} has {len(names)} '
                                 f"models ({', '.join(names) or 'none'}); give the run folder")
            yield names[0], directory, load_checkpoint(directory)
            return
        model_file = "model-best.pth.tar" if epoch is None else f"model.pth.tar-{epoch}"
        for name in self.get_model_names():
            model_path = osp.join(directory, name, model_file)
            if not osp.exists(model_path):
                raise FileNotFoundError(missing_model_message(directory, name, model_file))
            yield name, model_path, load_checkpoint(model_path)

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        """Load `model.pth.tar-<epoch>` (or `model-best.pth.tar` when epoch is None) into every registered model."""
        for name, model_path, checkpoint in self.checkpoints_to_load(directory, epoch):
            val_result = checkpoint.get("val_result")
            val_text = "None" if val_result is None else f"{val_result:.1f}"
            print(f"Load {model_path} to {name} (epoch={checkpoint['epoch']}, val_result={val_text})")
            load_trainable_state_dict(self._models[name], checkpoint["state_dict"], model_path)

    def set_model_mode(self, mode: str = "train", names=None) -> None:
        for name in self.get_model_names(names):
            if mode == "train":
                self._models[name].train()
            elif mode in ("test", "eval"):
                self._models[name].eval()
            else:
                raise KeyError(f"Model mode must be 'train', 'test' or 'eval', got {mode!r}")

    def update_lr(self, names=None) -> None:
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def detect_anomaly(self, loss: torch.Tensor) -> None:
        """Raise at once when `loss` is NaN or inf on any process (all processes agree, so none is left waiting
        in a gradient all-reduce). It reads the loss on the host: the epoch loop's own check of the returned
        loss summary (dassl/engine/loss_log.py) does not, and is what the project's trainers rely on."""
        total = average_over_processes(loss.detach().float().sum().reshape(1))
        if not torch.isfinite(total).all():
            if not hasattr(self, "batch_idx"):
                raise FloatingPointError("Loss is infinite or NaN!; training stopped")
            raise nonfinite_loss_error(self.epoch, self.max_epoch, self.batch_idx, self.num_batches,
                                       loss_detail("loss", total.item()))

    def init_writer(self, log_dir: str) -> None:
        if self.__dict__.get("_writer") is None:
            # imported here: tensorboard takes seconds to import and eval-only runs never need it
            from torch.utils.tensorboard import SummaryWriter

            print(f"Initialize tensorboard (log_dir={log_dir})")
            self._writer = SummaryWriter(log_dir=log_dir)

    def close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write_scalar(self, tag: str, scalar_value, global_step=None) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, scalar_value, global_step)

    def train(self, start_epoch: int, max_epoch: int) -> None:
        self.start_epoch = start_epoch
        self.max_epoch = max_epoch
        self.before_train()  # may move start_epoch forward (resume)
        for self.epoch in range(self.start_epoch, self.max_epoch):
            self.before_epoch()
            self.run_epoch()
            self.after_epoch()
        self.after_train()

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_epoch(self) -> None:
        pass

    def after_epoch(self) -> None:
        pass

    def run_epoch(self) -> None:
        raise NotImplementedError

    def test(self, split: Optional[str] = None):
        raise NotImplementedError

    def parse_batch_train(self, batch):
        raise NotImplementedError

    def parse_batch_test(self, batch):
        raise NotImplementedError

    def forward_backward(self, batch) -> Dict[str, float]:
        raise NotImplementedError

    def model_inference(self, input):
        raise NotImplementedError

    def model_zero_grad(self, names=None) -> None:
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss: torch.Tensor) -> None:
        self.detect_anomaly(loss)
        loss.backward()

    def model_update(self, names=None) -> None:
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].step()

    def model_backward_and_update(self, loss: torch.Tensor, names=None) -> None:
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)

    def prograd_backward_and_update(self, loss_a: torch.Tensor, loss_b: torch.Tensor, lambda_: float = 1,
                                    names=None) -> None:
        """ProGrad's update (the Dassl fork of the ProGrad / KgCoOp / TCP repositories): step with the gradient
        g_a of `loss_a` (the task loss), except that a parameter tensor whose g_a conflicts with the gradient
        g_b of `loss_b` (the zero-shot KL; cos(g_a, g_b) < 0) steps with g_a - lambda_ * (g_a . u) u,
        u = g_b / |g_b|: its component against the general direction removed (lambda_ = 1) or reduced.

        Per parameter tensor, as the fork. Unlike it: parameters without a gradient are left alone (the fork
        fails on them), the conflict test runs on the device (no host synchronisation per tensor), and a
        registered GradScaler (amp) scales both losses, so the projection sees the same directions."""
        names = self.get_model_names(names)
        self.model_zero_grad(names)
        scalers = {self._scalers.get(name) for name in names} - {None}
        scaler = scalers.pop() if len(scalers) == 1 else None
        scale = scaler.scale if scaler is not None else (lambda loss: loss)
        params = [p for name in names for p in self._models[name].parameters() if p.requires_grad]
        scale(loss_b).backward(retain_graph=True)
        general = [None if p.grad is None else p.grad.detach().clone() for p in params]
        self.model_zero_grad(names)
        scale(loss_a).backward()
        with torch.no_grad():
            for p, b_grad in zip(params, general):
                if p.grad is None or b_grad is None:
                    continue
                a_grad = p.grad.flatten()
                unit = b_grad.flatten() / torch.linalg.norm(b_grad)
                along = torch.dot(a_grad, unit)
                conflicting = torch.dot(a_grad / torch.linalg.norm(a_grad), unit) < 0
                p.grad.copy_(torch.where(conflicting, a_grad - lambda_ * along * unit, a_grad).view_as(p.grad))
        for name in names:
            optim = self._optims[name]
            if optim is None:
                continue
            if scaler is not None:
                scaler.step(optim)
            else:
                optim.step()
        if scaler is not None:
            scaler.update()


class SimpleTrainer(TrainerBase):
    """A trainer driven by a config: data from DataManager, one evaluator, resume from the output folder."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.check_cfg(cfg)
        self.device = training_device(cfg.USE_CUDA)
        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.cfg = cfg
        self.build_data_loader()
        if is_distributed():
            self.shard_data_loaders()
        self.build_model()
        if is_distributed():
            synchronize_trainable_parameters(self._models.values())
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname)
        self.best_result = -np.inf

    def check_cfg(self, cfg) -> None:
        """Hook for a trainer to validate its config keys (e.g. PREC) before anything is built."""

    def build_data_loader(self) -> None:
        dm = DataManager(self.cfg)
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    def shard_data_loaders(self) -> None:
        """Distributed runs: each process loads its share of every batch (dassl.utils.distributed.shard_loader)."""
        self.train_loader_x = shard_loader(self.train_loader_x, is_train=True)
        if self.train_loader_u is not None:
            self.train_loader_u = shard_loader(self.train_loader_u, is_train=True)
        if self.val_loader is not None:
            self.val_loader = shard_loader(self.val_loader, is_train=False)
        self.test_loader = shard_loader(self.test_loader, is_train=False)

    def build_model(self) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} must implement build_model() and register its model with register_model()"
        )

    def train(self) -> None:
        if not self.get_model_names():
            # no epoch could update or checkpoint anything: say so before the loop fails in forward_backward
            raise RuntimeError(
                f"{type(self).__name__} registers no model (register_model in build_model), so there is nothing to "
                "train; evaluate it with --eval-only"
            )
        super().train(self.start_epoch, self.max_epoch)

    def before_train(self) -> None:
        directory = self.cfg.RESUME or self.cfg.OUTPUT_DIR
        self.start_epoch = self.resume_model_if_exist(directory)
        if self.start_epoch > self.max_epoch:
            warnings.warn(f"{directory} holds a checkpoint of epoch {self.start_epoch} but OPTIM.MAX_EPOCH is "
                          f"{self.max_epoch}: nothing is trained and the epoch-{self.start_epoch} model is tested; "
                          "use another --output-dir to train this config")
        decorrelate_rng()  # after resume, which restores rank 0's random state on every rank
        if is_main_process():
            writer_dir = osp.join(self.output_dir, "tensorboard")
            mkdir_if_missing(writer_dir)
            self.init_writer(writer_dir)
        self.time_start = time.time()

    def after_train(self) -> None:
        print("Finish training")
        if not self.cfg.TEST.NO_TEST:
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                print("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
            else:
                print("Deploy the last-epoch model")
            self.test()
        elapsed = datetime.timedelta(seconds=round(time.time() - self.time_start))
        print(f"Elapsed: {elapsed}")
        self.close_writer()

    def after_epoch(self) -> None:
        last_epoch = (self.epoch + 1) == self.max_epoch
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        # 0 (default): every epoch, as resume points pruned below; > 0: every freq-th epoch, all kept (Dassl);
        # < 0: the last epoch only (Dassl's 0). docs/RELIABILITY.md explains the choice.
        meet_checkpoint_freq = freq == 0 or (freq > 0 and (self.epoch + 1) % freq == 0)
        if not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val":
            curr_result = self.test(split="val")
            if curr_result > self.best_result:
                self.best_result = curr_result
                self.save_model(self.epoch, self.output_dir, val_result=curr_result, model_name="model-best.pth.tar")
        if meet_checkpoint_freq or last_epoch:
            self.save_model(self.epoch, self.output_dir)
            if freq == 0 and is_main_process():  # the one writer of checkpoints prunes them
                # the newest two while training (one to fall back on if the newest is damaged); when done,
                # only the last epoch's file remains, as in an official output folder
                for name in self.get_model_names():
                    prune_epoch_checkpoints(osp.join(self.output_dir, name), keep=1 if last_epoch else 2)

    @torch.no_grad()
    def test(self, split: Optional[str] = None) -> float:
        """Evaluate on `split` (TEST.SPLIT by default; "val" falls back to test without a val set); returns the
        first result (accuracy)."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"
            data_loader = self.test_loader
        print(f"Evaluate on the *{split}* set")
        for batch in tqdm(data_loader, disable=not is_main_process()):
            input, label = self.parse_batch_test(batch)
            output = self.model_inference(input)
            self.evaluator.process(output, label)
        results = evaluate_gathered(self.evaluator)
        for k, v in results.items():
            self.write_scalar(f"{split}/{k}", v, self.epoch)
        return list(results.values())[0]

    def model_inference(self, input):
        return self.model(input)

    def parse_batch_test(self, batch):
        return self.to_device(batch["img"]), self.to_device(batch["label"])

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` on the training device; asynchronous from the pinned batches the loaders give with CUDA
        (a copy from unpinned memory simply completes before returning)."""
        return tensor.to(self.device, non_blocking=True)

    def get_current_lr(self, names=None) -> float:
        name = self.get_model_names(names)[0]
        return self._optims[name].param_groups[0]["lr"]


class TrainerX(SimpleTrainer):
    """Training with labelled data only (train_loader_x)."""

    def run_epoch(self) -> None:
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = len(self.train_loader_x)
        print_freq = self.cfg.TRAIN.PRINT_FREQ
        pending = PendingLosses()  # read on the host only at log lines (dassl/engine/loss_log.py)

        end = time.time()
        for self.batch_idx, batch in enumerate(self.train_loader_x):
            data_time.update(time.time() - end)
            loss_summary = self.forward_backward(batch)
            batch_time.update(time.time() - end)
            pending.add(self.batch_idx, self.get_current_lr(), loss_summary)

            print_now = (self.batch_idx + 1) % print_freq == 0 or self.num_batches < print_freq
            if print_now or self.batch_idx + 1 == self.num_batches:
                self.log_steps(pending.read(self.device), losses)
            if print_now:
                remaining = self.num_batches - self.batch_idx - 1 + (self.max_epoch - self.epoch - 1) * self.num_batches
                eta = datetime.timedelta(seconds=int(batch_time.avg * remaining))
                print(
                    f"epoch [{self.epoch + 1}/{self.max_epoch}] "
                    f"batch [{self.batch_idx + 1}/{self.num_batches}] "
                    f"time {batch_time.val:.3f} ({batch_time.avg:.3f}) "
                    f"data {data_time.val:.3f} ({data_time.avg:.3f}) "
                    f"{losses} "
                    f"lr {self.get_current_lr():.4e} "
                    f"eta {eta}"
                )
            end = time.time()

    def log_steps(self, steps: List[LoggedStep], losses: MetricMeter) -> None:
        """Stop on a non-finite loss (official trainers back-propagate themselves, without detect_anomaly, so a
        diverged run is caught here), else add each step to the running averages and to tensorboard."""
        for step in steps:
            check_finite(step, self.epoch, self.max_epoch, self.num_batches)
            losses.update(step.values)
            n_iter = self.epoch * self.num_batches + step.batch_idx
            for name, meter in losses.meters.items():
                self.write_scalar("train/" + name, meter.avg, n_iter)
            self.write_scalar("train/lr", step.lr, n_iter)

    def parse_batch_train(self, batch):
        return self.to_device(batch["img"]), self.to_device(batch["label"]), self.to_device(batch["domain"])
