"""The trainer life-cycle in-process with the Dassl-style TinyLinear trainer: exact resume after an
interruption, trainable-only checkpoints, best_val deployment, NaN stop."""
import os

import pytest
import torch

import dassl_e2e_plugin
from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.utils import set_random_seed
from dassl.utils.torchtools import content_digest
from dassl_testutils import make_color_dataset, set_keys


class Interrupted(Exception):
    pass


def tiny_cfg(root, output_dir, **overrides):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = root
    cfg.DATASET.NAME = "TinyColors"
    cfg.DATASET.NUM_SHOTS = 4
    cfg.TRAINER.NAME = "TinyLinear"
    cfg.OUTPUT_DIR = output_dir
    cfg.INPUT.SIZE = (8, 8)
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.OPTIM.NAME = "sgd"
    cfg.OPTIM.LR = 0.1
    cfg.OPTIM.MAX_EPOCH = 3
    cfg.OPTIM.LR_SCHEDULER = "cosine"
    cfg.OPTIM.WARMUP_EPOCH = 1
    cfg.OPTIM.WARMUP_TYPE = "constant"
    cfg.TRAIN.PRINT_FREQ = 1
    set_keys(cfg, overrides)
    return cfg


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    make_color_dataset(root, per_class=8, size=10)
    return root


def _build(cfg):
    set_random_seed(1)
    return build_trainer(cfg)


def test_resumed_run_equals_uninterrupted_run(data_root, tmp_path):
    full = _build(tiny_cfg(data_root, str(tmp_path / "full"), **{"TRAIN.CHECKPOINT_FREQ": 1}))
    full.train()

    cut_cfg = tiny_cfg(data_root, str(tmp_path / "cut"), **{"TRAIN.CHECKPOINT_FREQ": 1})
    cut = _build(cut_cfg)
    original_after_epoch = cut.after_epoch

    def after_epoch_then_crash():
        original_after_epoch()
        if cut.epoch == 0:
            raise Interrupted

    cut.after_epoch = after_epoch_then_crash
    with pytest.raises(Interrupted):
        cut.train()

    resumed = _build(cut_cfg)
    resumed.train()
    assert resumed.start_epoch == 1
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed.get_current_lr() == full.get_current_lr()

    ckpt = torch.load(tmp_path / "full" / "linear_probe" / "model.pth.tar-3", weights_only=True)
    assert ckpt["epoch"] == 3
    assert "0.weight" not in ckpt["state_dict"] and "3.weight" in ckpt["state_dict"]  # frozen stem dropped
    assert (tmp_path / "full" / "linear_probe" / "checkpoint").read_text() == "model.pth.tar-3\n"
    assert os.path.isdir(tmp_path / "full" / "tensorboard")


def test_best_val_saves_and_deploys_best_file(data_root, tmp_path, capsys):
    cfg = tiny_cfg(data_root, str(tmp_path / "best"), **{"TEST.FINAL_MODEL": "best_val", "OPTIM.MAX_EPOCH": 2})
    trainer = _build(cfg)
    trainer.train()
    out = capsys.readouterr().out
    assert os.path.isfile(tmp_path / "best" / "linear_probe" / "model-best.pth.tar")
    assert "Evaluate on the *val* set" in out and "Deploy the model with the best val performance" in out
    assert "model-best.pth.tar to linear_probe (epoch=" in out


def test_nan_loss_stops_with_epoch_and_batch(data_root, tmp_path):
    class NaNTrainer(dassl_e2e_plugin.TinyLinear):
        def forward_backward(self, batch):
            summary = super().forward_backward(batch)
            if self.batch_idx == 1:
                summary["loss"] = float("nan")
            return summary

    set_random_seed(1)
    trainer = NaNTrainer(tiny_cfg(data_root, str(tmp_path / "nan")))
    with pytest.raises(FloatingPointError, match=r"Loss is infinite or NaN! at epoch \[1/3\] batch \[2/3\]; .*; loss = nan$"):
        trainer.train()


def test_resume_from_another_model_is_refused(data_root, tmp_path):
    cfg = tiny_cfg(data_root, str(tmp_path / "a"), **{"OPTIM.MAX_EPOCH": 1})
    _build(cfg).train()
    folder = tmp_path / "a" / "linear_probe"
    ckpt = torch.load(folder / "model.pth.tar-1", weights_only=True)
    ckpt["state_dict"]["3.weight"] = torch.zeros(5, 12)
    ckpt["content_sha256"] = content_digest(ckpt)  # a valid checkpoint, of another model
    torch.save(ckpt, folder / "model.pth.tar-1")
    with pytest.raises(RuntimeError, match=r"model\.pth\.tar-1.*3\.weight: checkpoint \(5, 12\) vs model \(3, 12\)"):
        _build(cfg).train()
