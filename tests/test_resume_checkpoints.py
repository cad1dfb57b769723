"""Checkpoint trust and resume fallback: damaged files are refused by name, resume falls back to the newest
good checkpoint, a run killed before its first complete checkpoint starts afresh, models saved an epoch apart
resume together, and TRAIN.CHECKPOINT_FREQ decides which files exist during and after training."""
import os

import pytest
import torch
import torch.nn as nn

from dassl.engine import TrainerBase, build_trainer
from dassl.utils import CheckpointError, load_checkpoint, resume_from_checkpoint, save_checkpoint
from datasets.demo import ensure_demo_data
from reliability_testutils import demo_cfg


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


def _save_epochs(folder, epochs=(1, 2)):
    """Checkpoints whose weights are `_model(epoch)`'s, one per epoch; returns those models."""
    models = {}
    for epoch in epochs:
        models[epoch] = _model(epoch)
        save_checkpoint({"state_dict": models[epoch].state_dict(), "epoch": epoch}, str(folder))
    return models


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path):
    path.write_bytes(b"")


def _flip_a_weight_bit(path):
    # the zip container does not verify its CRCs on load: only the content digest notices this
    data = bytearray(path.read_bytes())
    weight = torch.load(path, weights_only=True)["state_dict"]["weight"]
    offset = bytes(data).find(weight.numpy().tobytes())
    assert offset > 0
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,message", [
    (_truncate, "is truncated or corrupt"),
    (_empty, r"is empty \(0 bytes\)"),
    (_flip_a_weight_bit, "is corrupt: its content does not match its SHA-256"),
])
def test_damaged_newest_checkpoint_is_named_and_resume_falls_back(tmp_path, damage, message):
    folder = tmp_path / "prompt_learner"
    models = _save_epochs(folder)
    newest = folder / "model.pth.tar-2"
    damage(newest)
    with pytest.raises(CheckpointError, match=rf'Checkpoint "{newest}" {message}'):
        load_checkpoint(str(newest))
    model = _model(0)
    with pytest.warns(UserWarning, match=rf'"{newest}" {message}.*falling back to an older checkpoint'):
        assert resume_from_checkpoint(str(folder), model) == 1
    assert torch.equal(model.weight, models[1].weight)


def test_no_usable_checkpoint_and_dangling_pointer(tmp_path):
    folder = tmp_path / "prompt_learner"
    models = _save_epochs(folder)
    os.remove(folder / "model.pth.tar-2")  # the pointer names a file that is gone
    model = _model(0)
    assert resume_from_checkpoint(str(folder), model) == 1
    assert torch.equal(model.weight, models[1].weight)
    _empty(folder / "model.pth.tar-1")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match=rf'No usable checkpoint in "{folder}" to resume '
                                                                         r"from: .*Delete the folder to train from scratch"):
        resume_from_checkpoint(str(folder), model)


class _TwoModels(TrainerBase):
    def __init__(self, seed: int):
        super().__init__()
        self.best_result = float("-inf")
        for name in ("a", "b"):
            model = _model(seed)
            self.register_model(name, model, torch.optim.SGD(model.parameters(), lr=0.1))


def test_models_saved_an_epoch_apart_resume_from_the_older_epoch(tmp_path):
    trainer = _TwoModels(1)
    trainer.save_model(0, str(tmp_path))
    epoch_1 = {name: trainer._models[name].weight.clone() for name in "ab"}
    trainer.best_result = 42.0
    for name in "ab":
        trainer._models[name].weight.data.add_(1.0)
    # killed after saving model a of epoch 2, before model b's
    save_checkpoint({"state_dict": trainer._models["a"].state_dict(), "epoch": 2, "best_val_result": 42.0},
                    str(tmp_path / "a"))
    resumed = _TwoModels(5)
    assert resumed.resume_model_if_exist(str(tmp_path)) == 1
    for name in "ab":
        assert torch.equal(resumed._models[name].weight, epoch_1[name])
    assert resumed.best_result == float("-inf")  # as stored with epoch 1


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_checkpoints") / "data"
    ensure_demo_data(str(root / "demo"))
    return str(root)


def test_killed_before_the_first_complete_checkpoint_trains_from_scratch(data_root, tmp_path, capsys):
    out = tmp_path / "out"
    folder = out / "prompt_learner"
    folder.mkdir(parents=True)
    stale = folder / ".model.pth.tar-1.abcd1234.tmp"  # what a SIGKILL during the first write leaves
    stale.write_bytes(b"half a checkpoint")
    build_trainer(demo_cfg(data_root, str(out), "OPTIM.MAX_EPOCH", "1")).train()
    assert "No checkpoint found, train from scratch" in capsys.readouterr().out
    assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-1"]


@pytest.mark.parametrize("freq,during,after", [
    (0, [["1"], ["1", "2"], ["2", "3"], ["4"]], ["4"]),  # default: every epoch, the newest two, the last when done
    (2, [[], ["2"], ["2"], ["2", "4"]], ["2", "4"]),  # Dassl's every N-th, all kept
    (-1, [[], [], [], ["4"]], ["4"]),  # the last epoch only
])
def test_checkpoint_freq(data_root, tmp_path, freq, during, after):
    out = tmp_path / "out"
    trainer = build_trainer(demo_cfg(data_root, str(out), "OPTIM.MAX_EPOCH", "4", "TRAIN.CHECKPOINT_FREQ", str(freq),
                                     "TEST.NO_TEST", "True"))
    seen = []
    after_epoch = trainer.after_epoch

    def record():
        after_epoch()
        folder = out / "prompt_learner"
        names = os.listdir(folder) if folder.exists() else []
        seen.append(sorted(n.rsplit("-", 1)[1] for n in names if n.startswith("model.pth.tar-")))

    trainer.after_epoch = record
    trainer.train()
    assert seen == during
    assert sorted(n.rsplit("-", 1)[1] for n in os.listdir(out / "prompt_learner") if n.startswith("model.pth")) == after


def test_atomic_files_get_the_mode_a_plain_open_would_give(tmp_path):
    """Temporary files are private (0600); the published file must not be, or other users of a shared data
    root could not read its caches."""
    from dassl.utils import write_json_atomic

    old_umask = os.umask(0o022)
    try:
        write_json_atomic({"a": 1}, str(tmp_path / "split.json"))
    finally:
        os.umask(old_umask)
    assert os.stat(tmp_path / "split.json").st_mode & 0o777 == 0o644


def test_a_checkpoint_beyond_max_epoch_is_reported(data_root, tmp_path):
    """A later config with fewer epochs in the same output folder would silently test the old model."""
    out = str(tmp_path / "out")
    build_trainer(demo_cfg(data_root, out, "OPTIM.MAX_EPOCH", "2", "TEST.NO_TEST", "True")).train()
    with pytest.warns(UserWarning, match=r"checkpoint of epoch 2 but OPTIM.MAX_EPOCH is 1.*another --output-dir"):
        build_trainer(demo_cfg(data_root, out, "OPTIM.MAX_EPOCH", "1", "TEST.NO_TEST", "True")).train()
