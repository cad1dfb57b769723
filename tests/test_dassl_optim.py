"""Optimizer param groups, the LR sequence of the method configs, and exact resume of the schedule."""
import math
import warnings

import pytest
import torch
import torch.nn as nn

from dassl.config import get_cfg_default
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import load_checkpoint, save_checkpoint
from dassl_testutils import lr_per_epoch

MAPLE_LRS = [1e-5, 0.0035, 0.0031658, 0.0022908, 0.0012092]


@pytest.fixture(autouse=True)
def _quiet_scheduler_order_warnings():
    # the LR tests step schedulers without optimizer steps; torch warns about that order
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
        yield


def maple_optim_cfg(warmup_type="constant", lr=0.0035, max_epoch=5):
    cfg = get_cfg_default()
    o = cfg.OPTIM
    o.NAME, o.LR, o.MAX_EPOCH, o.LR_SCHEDULER = "sgd", lr, max_epoch, "cosine"
    o.WARMUP_EPOCH, o.WARMUP_TYPE, o.WARMUP_CONS_LR = 1, warmup_type, 1e-5
    return o


@pytest.mark.parametrize("warmup_type", ["constant", "linear"])
def test_maple_lr_sequence(warmup_type):
    seq = lr_per_epoch(maple_optim_cfg(warmup_type), 5)
    assert seq == pytest.approx(MAPLE_LRS, rel=1e-4)
    for e in range(1, 5):
        assert seq[e] == pytest.approx(0.0035 * (1 + math.cos(math.pi * (e - 1) / 5)) / 2, rel=1e-12)


def test_step_schedules():
    cfg = get_cfg_default().OPTIM
    cfg.NAME, cfg.LR, cfg.LR_SCHEDULER, cfg.STEPSIZE, cfg.GAMMA = "sgd", 1.0, "single_step", (2,), 0.5
    assert lr_per_epoch(cfg, 5) == pytest.approx([1, 1, 0.5, 0.5, 0.25])
    cfg.LR_SCHEDULER, cfg.STEPSIZE = "multi_step", (1, 3)
    assert lr_per_epoch(cfg, 5) == pytest.approx([1, 0.5, 0.5, 0.25, 0.25])
    cfg.LR_SCHEDULER = "poly"
    with pytest.raises(ValueError, match="cosine"):
        build_lr_scheduler(build_optimizer(nn.Linear(2, 2), cfg), cfg)


def test_sgd_param_group_over_all_parameters():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    model[0].weight.requires_grad_(False)
    opt = build_optimizer(model, maple_optim_cfg())
    assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == 4  # frozen ones included
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"], g["dampening"], g["nesterov"]) == (0.0035, 0.9, 5e-4, 0, False)
    cfg = maple_optim_cfg()
    cfg.NAME = "sgdd"
    with pytest.raises(ValueError, match="sgdd"):
        build_optimizer(model, cfg)


def test_staged_lr_groups():
    model = nn.Sequential()
    model.add_module("backbone", nn.Linear(2, 2))
    model.add_module("head", nn.Linear(2, 2))
    cfg = maple_optim_cfg()
    cfg.STAGED_LR, cfg.NEW_LAYERS, cfg.BASE_LR_MULT = True, ("head",), 0.1
    opt = build_optimizer(model, cfg)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.00035, 0.0035])
    assert opt.param_groups[1]["params"][0] is model.head.weight


@pytest.mark.parametrize("resume_at", [1, 2, 3, 4])
def test_resume_continues_lr_and_weights_exactly(tmp_path, resume_at):
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.randn(8, 1)

    def run(model, opt, sched, epochs):
        seq = []
        for _ in range(epochs):
            seq.append(opt.param_groups[0]["lr"])
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            sched.step()
        return seq

    def fresh():
        torch.manual_seed(1)
        model = nn.Linear(3, 1)
        opt = build_optimizer(model, maple_optim_cfg())
        return model, opt, build_lr_scheduler(opt, maple_optim_cfg())

    model_full, opt, sched = fresh()
    full = run(model_full, opt, sched, 5)

    model, opt, sched = fresh()
    first = run(model, opt, sched, resume_at)
    state = {"state_dict": model.state_dict(), "epoch": resume_at, "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    path = save_checkpoint(state, str(tmp_path))
    ckpt = load_checkpoint(path)  # weights_only
    model2, opt2, sched2 = fresh()
    model2.load_state_dict(ckpt["state_dict"])
    opt2.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    rest = run(model2, opt2, sched2, 5 - resume_at)
    assert first + rest == full
    assert sched2.successor.optimizer is opt2  # the successor drives the live optimizer after resume
    assert torch.equal(model2.weight, model_full.weight) and torch.equal(model2.bias, model_full.bias)
