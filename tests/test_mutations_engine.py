"""Guards against plausible one-line bugs in the engine that the rest of the suite let through: the LR
schedules outside the method configs' 1-epoch warm-up (longer linear / constant warm-ups, WARMUP_RECOUNT
False, single_step), optimizer hyper-parameters and the Dassl defaults the method configs rely on, the
evaluator's macro-F1 inputs, `test()` (fresh evaluator, returns the accuracy), best_val deployment,
checkpoint epochs and seeding."""
import math
import os
import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import dassl_e2e_plugin  # noqa: F401  (registers TinyColors / TinyLinear)
from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.evaluation import build_evaluator
from dassl.optim import build_optimizer
from dassl.utils import set_random_seed
from dassl_testutils import lr_per_epoch, make_color_dataset, set_keys


@pytest.fixture(autouse=True)
def _quiet_scheduler_order_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
        yield


# --------------------------------------------------------------------------------------------------------
# LR schedules and optimizers


def optim_cfg(**changes):
    cfg = get_cfg_default().OPTIM
    cfg.NAME, cfg.LR, cfg.LR_SCHEDULER, cfg.MAX_EPOCH = "sgd", 1.0, "cosine", 6
    for key, value in changes.items():
        cfg[key] = value
    return cfg


def cosine(k, total):
    return (1 + math.cos(math.pi * k / total)) / 2


def test_linear_warmup_over_three_epochs():
    """Dassl's LinearWarmupScheduler: min_lr at epoch 0, then LR * e / W for e < W; the cosine (recounted)
    takes over at epoch W with its own epoch 0."""
    cfg = optim_cfg(WARMUP_EPOCH=3, WARMUP_TYPE="linear", WARMUP_MIN_LR=1e-5)
    expected = [1e-5, 1 / 3, 2 / 3, 1.0, cosine(1, 6), cosine(2, 6), cosine(3, 6)]
    assert lr_per_epoch(cfg, 7) == pytest.approx(expected, rel=1e-12)


def test_constant_warmup_over_two_epochs():
    cfg = optim_cfg(WARMUP_EPOCH=2, WARMUP_TYPE="constant", WARMUP_CONS_LR=0.01)
    expected = [0.01, 0.01, 1.0, cosine(1, 6), cosine(2, 6), cosine(3, 6)]
    assert lr_per_epoch(cfg, 6) == pytest.approx(expected, rel=1e-12)


def test_warmup_without_recount_continues_the_cosine_from_the_warmup_epoch():
    """WARMUP_RECOUNT False: the successor's epoch counter is set to WARMUP_EPOCH, so after the warm-up the
    cosine continues from there (torch's recursive cosine, starting from the LR the warm-up handed over):
    lr(e) = LR * (1 + cos(pi e / T)) / (1 + cos(pi W / T)) for e >= W."""
    for warmup in (1, 2):
        cfg = optim_cfg(WARMUP_EPOCH=warmup, WARMUP_TYPE="constant", WARMUP_CONS_LR=0.01, WARMUP_RECOUNT=False)
        expected = [0.01] * warmup + [cosine(e, 6) / cosine(warmup, 6) for e in range(warmup, 6)]
        assert lr_per_epoch(cfg, 6) == pytest.approx(expected, rel=1e-9)


def test_single_step_uses_the_last_stepsize():
    cfg = optim_cfg(LR_SCHEDULER="single_step", STEPSIZE=(1, 3), GAMMA=0.1)
    assert lr_per_epoch(cfg, 7) == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01], rel=1e-12)
    cfg = optim_cfg(LR_SCHEDULER="single_step", STEPSIZE=(-1,), GAMMA=0.1, MAX_EPOCH=4)
    assert lr_per_epoch(cfg, 5) == pytest.approx([1, 1, 1, 1, 0.1], rel=1e-12)


def test_optimizer_hyper_parameters_come_from_the_config():
    model = nn.Linear(2, 2)
    cfg = optim_cfg(NAME="adam", LR=0.01, WEIGHT_DECAY=0.1, ADAM_BETA1=0.8, ADAM_BETA2=0.95)
    group = build_optimizer(model, cfg).param_groups[0]
    assert (group["lr"], group["weight_decay"], group["betas"], group["amsgrad"]) == (0.01, 0.1, (0.8, 0.95), False)
    cfg.NAME = "amsgrad"
    assert build_optimizer(model, cfg).param_groups[0]["amsgrad"] is True
    cfg.NAME = "adamw"
    group = build_optimizer(model, cfg).param_groups[0]
    assert (group["weight_decay"], group["betas"]) == (0.1, (0.8, 0.95))
    cfg = optim_cfg(NAME="rmsprop", LR=0.01, MOMENTUM=0.5, RMSPROP_ALPHA=0.9, WEIGHT_DECAY=0.2)
    group = build_optimizer(model, cfg).param_groups[0]
    assert (group["lr"], group["momentum"], group["alpha"], group["weight_decay"]) == (0.01, 0.5, 0.9, 0.2)
    cfg = optim_cfg(SGD_NESTEROV=True, SGD_DAMPNING=0.0, MOMENTUM=0.8, WEIGHT_DECAY=0.3)
    group = build_optimizer(model, cfg).param_groups[0]
    assert (group["nesterov"], group["momentum"], group["weight_decay"]) == (True, 0.8, 0.3)


def test_dassl_defaults_the_method_configs_rely_on():
    """Keys no method config sets, so Dassl's defaults decide the results."""
    cfg = get_cfg_default()
    o = cfg.OPTIM
    assert (o.WEIGHT_DECAY, o.MOMENTUM, o.SGD_DAMPNING, o.SGD_NESTEROV) == (5e-4, 0.9, 0, False)
    assert (o.WARMUP_CONS_LR, o.WARMUP_MIN_LR, o.WARMUP_RECOUNT) == (1e-5, 1e-5, True)
    assert (o.ADAM_BETA1, o.ADAM_BETA2, o.RMSPROP_ALPHA, o.GAMMA, tuple(o.STEPSIZE)) == (0.9, 0.999, 0.99, 0.1, (-1,))
    assert (o.STAGED_LR, o.BASE_LR_MULT) == (False, 0.1)
    assert tuple(cfg.INPUT.RRCROP_SCALE) == (0.08, 1.0)
    assert cfg.DATALOADER.TRAIN_X.SAMPLER == "RandomSampler" and cfg.DATALOADER.TEST.SAMPLER == "SequentialSampler"
    assert (cfg.TEST.FINAL_MODEL, cfg.TEST.SPLIT, cfg.TEST.NO_TEST) == ("last_step", "test", False)
    assert cfg.DATALOADER.K_TRANSFORMS == 1


# --------------------------------------------------------------------------------------------------------
# Evaluation


def test_macro_f1_is_over_the_true_labels():
    """sklearn's f1_score(y_true, y_pred, average="macro", labels=unique(y_true)): a wrongly predicted label
    that never occurs in the ground truth does not count as a class."""
    evaluator = build_evaluator(get_cfg_default(), lab2cname={0: "a", 1: "b", 2: "c"})
    gt = torch.tensor([0, 0, 1, 1])
    logits = torch.nn.functional.one_hot(torch.tensor([0, 2, 1, 1]), 3).float()
    evaluator.process(logits[:1], gt[:1])
    evaluator.process(logits[1:], gt[1:])
    results = evaluator.evaluate()
    assert results["accuracy"] == pytest.approx(75.0)
    assert results["macro_f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)


@pytest.fixture(scope="module")
def colors_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("colors"))
    make_color_dataset(root, per_class=8, size=10)
    return root


def tiny_linear(root, output_dir, **changes):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.TRAINER.NAME, cfg.OUTPUT_DIR = root, "TinyColors", "TinyLinear", output_dir
    cfg.INPUT.SIZE = (8, 8)
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.DATALOADER.TEST.BATCH_SIZE = 5
    o = cfg.OPTIM
    o.NAME, o.LR, o.MAX_EPOCH, o.LR_SCHEDULER, o.WARMUP_EPOCH, o.WARMUP_TYPE = "sgd", 0.5, 3, "cosine", 1, "constant"
    o.WARMUP_CONS_LR = 0.1
    cfg.TRAIN.PRINT_FREQ = 100
    set_keys(cfg, changes)
    set_random_seed(1)
    return build_trainer(cfg)


def _accuracy(trainer):
    """Top-1 accuracy of the trainer's model on its test loader, computed here."""
    hits = total = 0
    with torch.no_grad():
        trainer.model.eval()
        for batch in trainer.test_loader:
            hits += int((trainer.model(batch["img"]).argmax(dim=1) == batch["label"]).sum())
            total += len(batch["label"])
    return 100.0 * hits / total


def test_test_returns_the_accuracy_of_a_fresh_evaluation(colors_root, tmp_path):
    """test() evaluates from a reset evaluator and returns the accuracy: two evaluations of different
    weights (each with an accuracy strictly between 0 and 100, so it differs from the error rate and the
    pooled result) each give their own accuracy."""
    trainer = tiny_linear(colors_root, str(tmp_path))
    head = trainer.model[3]
    torch.manual_seed(0)
    results = []
    for _ in range(8):  # seeded random heads; the first two with distinct intermediate accuracies are used
        with torch.no_grad():
            head.weight.copy_(torch.randn_like(head.weight))
            head.bias.zero_()
        expected = _accuracy(trainer)
        if 0 < expected < 100 and expected not in results:
            assert trainer.test() == pytest.approx(expected)
            results.append(expected)
        if len(results) == 2:
            break
    assert len(results) == 2


def test_best_val_deploys_the_weights_of_the_best_epoch(colors_root, tmp_path):
    """best_val: after each epoch the val result is compared with the best so far; the best epoch's weights
    are saved as model-best.pth.tar and loaded after training (here epoch 2 of 3 is scripted best)."""
    trainer = tiny_linear(colors_root, str(tmp_path), **{"TEST.FINAL_MODEL": "best_val"})
    scripted = iter([50.0, 90.0, 70.0])
    real_test, real_after_epoch = trainer.test, trainer.after_epoch
    weights = {}

    def test(split=None):
        return next(scripted) if split == "val" else real_test(split)

    def after_epoch():
        weights[trainer.epoch] = trainer.model[3].weight.detach().clone()
        real_after_epoch()

    trainer.test, trainer.after_epoch = test, after_epoch
    trainer.train()
    assert not torch.equal(weights[1], weights[2])
    assert torch.equal(trainer.model[3].weight, weights[1])
    best = torch.load(os.path.join(str(tmp_path), "linear_probe", "model-best.pth.tar"), weights_only=True)
    assert (best["epoch"], best["val_result"]) == (2, 90.0)


def test_checkpoints_every_n_epochs_are_numbered_from_one(colors_root, tmp_path):
    trainer = tiny_linear(colors_root, str(tmp_path), **{"TRAIN.CHECKPOINT_FREQ": 2, "OPTIM.MAX_EPOCH": 3})
    trainer.train()
    folder = os.path.join(str(tmp_path), "linear_probe")
    assert sorted(f for f in os.listdir(folder) if f.startswith("model")) == ["model.pth.tar-2", "model.pth.tar-3"]


def test_set_random_seed_seeds_python_numpy_and_torch():
    draws = []
    for _ in range(2):
        set_random_seed(3)
        draws.append((random.random(), float(np.random.rand()), float(torch.rand(()))))
    assert draws[0] == draws[1]
    set_random_seed(4)
    assert random.random() != draws[0][0]


def test_train_py_seed_zero_is_a_fixed_seed(colors_root, tmp_path):
    """`--seed 0` seeds every RNG like any other non-negative seed (the official `if args.seed:` dropped it):
    the few-shot picks are those of random.seed(0), whatever state the RNGs were in before."""
    import sys

    import train
    from dassl.utils import listdir_nohidden

    def build(output):
        args = train.build_parser().parse_args([
            "--root", colors_root, "--seed", "0", "--trainer", "TinyLinear", "--output-dir", output, "--no-train",
            "--import", "dassl_e2e_plugin", "DATASET.NAME", "TinyColors", "DATASET.NUM_SHOTS", "2",
            "INPUT.SIZE", "(8, 8)", "DATALOADER.NUM_WORKERS", "0", "OPTIM.NAME", "sgd"])
        stdout = sys.stdout
        try:
            return train.main(args)
        finally:
            if sys.stdout is not stdout:  # train.py tees stdout into the run's log.txt
                sys.stdout.close()
                sys.stdout = stdout

    folder = os.path.join(colors_root, "tiny_colors")
    train_half = []
    for classname in listdir_nohidden(folder, sort=True):
        files = listdir_nohidden(os.path.join(folder, classname), sort=True)
        train_half.append([os.path.join(folder, classname, f) for f in files[:len(files) // 2]])
    random.seed(0)
    expected = [path for paths in train_half for path in random.sample(paths, 2)]

    weights = []
    for k, state in enumerate((123, 456)):
        random.seed(state)
        torch.manual_seed(state)
        trainer = build(str(tmp_path / f"run{k}"))
        assert [d.impath for d in trainer.dm.dataset.train_x] == expected
        weights.append(trainer.model[3].weight.detach().clone())
    assert torch.equal(weights[0], weights[1])
