"""Checkpoint files: atomic weights_only round trip, trainable-only loading, official Dassl checkpoints."""
import os
import pickle
import warnings

import pytest
import torch
import torch.nn as nn

from dassl.optim import ConstantWarmupScheduler
from dassl.utils import (
    count_num_param,
    load_checkpoint,
    load_pretrained_weights,
    load_trainable_state_dict,
    resume_from_checkpoint,
    save_checkpoint,
    trainable_state_dict,
)


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)  # "frozen backbone"
    model[0].bias.requires_grad_(False)
    return model


def test_save_roundtrip_weights_only_pointer_and_no_temp_files(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state = {"state_dict": trainable_state_dict(model), "epoch": 3, "optimizer": opt.state_dict(), "scheduler": None, "val_result": None}
    state["state_dict"] = {"module." + k: v for k, v in state["state_dict"].items()}  # as saved under DataParallel
    path = save_checkpoint(state, str(tmp_path / "prompt_learner"))
    assert os.path.basename(path) == "model.pth.tar-3"
    assert (tmp_path / "prompt_learner" / "checkpoint").read_text() == "model.pth.tar-3\n"
    assert sorted(os.listdir(tmp_path / "prompt_learner")) == ["checkpoint", "model.pth.tar-3"]
    loaded = torch.load(path, weights_only=True)
    assert set(loaded) == {"state_dict", "epoch", "optimizer", "scheduler", "val_result", "content_sha256"}
    assert "0.weight" not in loaded["state_dict"] and "1.running_mean" in loaded["state_dict"]
    assert all(not k.startswith("module.") for k in loaded["state_dict"])
    save_checkpoint(dict(state, epoch=4), str(tmp_path / "prompt_learner"), is_best=True)
    assert (tmp_path / "prompt_learner" / "checkpoint").read_text() == "model.pth.tar-4\n"
    assert torch.load(tmp_path / "prompt_learner" / "model-best.pth.tar", weights_only=True)["epoch"] == 4


def test_load_trainable_state_dict_checks_missing_and_shapes(tmp_path):
    model = _model()
    sd = trainable_state_dict(model)
    other = _model()
    load_trainable_state_dict(other, sd, "x.pth")
    assert torch.equal(other[2].weight, model[2].weight)
    missing = {k: v for k, v in sd.items() if k != "2.weight"}
    with pytest.raises(RuntimeError, match=r"x\.pth.*missing trainable parameters: \['2\.weight'\]"):
        load_trainable_state_dict(_model(), missing, "x.pth")
    wrong = dict(sd, **{"2.weight": torch.zeros(5, 4)})
    with pytest.raises(RuntimeError, match=r"2\.weight: checkpoint \(5, 4\) vs model \(2, 4\)"):
        load_trainable_state_dict(_model(), wrong, "x.pth")


def _official_style_checkpoint(path, model):
    """What Dassl 0.6.3 writes: the scheduler entry pickles the successor object with its optimizer copy."""
    opt = torch.optim.SGD(model.parameters(), lr=0.0035, momentum=0.9, weight_decay=5e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        successor = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5.0)
        wrapper = ConstantWarmupScheduler(opt, successor, 1, 1e-5)
        model(torch.randn(2, 3)).sum().backward()
        for _ in range(2):  # two epochs done
            opt.step()
            wrapper.step()
    scheduler_state = {k: v for k, v in wrapper.__dict__.items() if k != "optimizer"}
    torch.save(
        {"state_dict": model.state_dict(), "epoch": 2, "optimizer": opt.state_dict(), "scheduler": scheduler_state, "val_result": None},
        path,
    )
    return opt.param_groups[0]["lr"]


def test_official_dassl_checkpoint_loads_through_allow_list(tmp_path):
    model = _model()
    folder = tmp_path / "MultiModalPromptLearner"
    folder.mkdir()
    lr_after_two_epochs = _official_style_checkpoint(folder / "model.pth.tar-2", model)
    (folder / "checkpoint").write_text("model.pth.tar-2\n")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(folder / "model.pth.tar-2", weights_only=True)
    ckpt = load_checkpoint(str(folder / "model.pth.tar-2"))
    assert isinstance(ckpt["scheduler"]["successor"], torch.optim.lr_scheduler.CosineAnnealingLR)

    # resuming from it continues the schedule on the live optimizer (Dassl froze the LR here)
    new_model = _model()
    opt = torch.optim.SGD(new_model.parameters(), lr=0.0035, momentum=0.9, weight_decay=5e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = ConstantWarmupScheduler(opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5.0), 1, 1e-5)
        assert resume_from_checkpoint(str(folder), new_model, opt, sched) == 2
        assert opt.param_groups[0]["lr"] == pytest.approx(lr_after_two_epochs)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0022908, rel=1e-4)


def test_untrusted_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": os.system}, path)  # a global outside the allow-list
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(str(path))
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_checkpoint(str(tmp_path / "nothing.pth"))


def test_load_pretrained_weights_and_count(tmp_path, capsys):
    model = _model()
    path = save_checkpoint({"state_dict": model.state_dict(), "epoch": 1}, str(tmp_path))
    other = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 7))
    load_pretrained_weights(other, path)
    assert torch.equal(other[0].weight, model[0].weight)
    assert "2.weight" in capsys.readouterr().out  # discarded: shape differs
    assert count_num_param(model) == 3 * 4 + 4 + 4 + 4 + 4 * 2 + 2
