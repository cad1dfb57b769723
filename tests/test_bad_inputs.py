"""A catalogue of bad inputs: each gets an error a person can act on (asserted below), and none of them
damages anything already on disk (the dataset, earlier checkpoints)."""
import errno
import os
import re
import shutil

import numpy as np
import pytest
import torch

import train
from dassl.data import DataManager
from dassl.engine import build_trainer
from dassl.utils import load_checkpoint, load_resume_checkpoint, read_image, save_checkpoint, setup_logger
from datasets.demo import ensure_demo_data
from reliability_testutils import demo_cfg, make_image_folder, odd_image, tree_fingerprint


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    """The demo dataset with its few-shot cache, and a CoOp checkpoint (base classes, 1 epoch) in trained/."""
    root = tmp_path_factory.mktemp("bad_inputs")
    ensure_demo_data(str(root / "data" / "demo"))
    cfg = demo_cfg(str(root / "data"), str(root / "trained"), "OPTIM.MAX_EPOCH", "1", "DATASET.SUBSAMPLE_CLASSES", "base")
    build_trainer(cfg).train()
    return root


@pytest.fixture
def untouched(demo_root):
    """Fails the test if anything under the module's folder (dataset, trained checkpoint) changed."""
    before = tree_fingerprint(str(demo_root))
    yield
    assert tree_fingerprint(str(demo_root)) == before


# ---------------------------------------------------------------- command line and config


@pytest.mark.parametrize("opts,message", [
    (["--trainer", "CoOpp"], r"unknown trainer 'CoOpp'; registered trainers: .*did you mean CoOp\?"),
    (["--trainer", "CoOp", "DATASET.NAME", "Demoo"], r"unknown dataset 'Demoo'; registered datasets: .*did you mean Demo\?"),
    (["--trainer", "CoOp", "TRAINER.COOP.NCTX", "4"], r"unknown config key TRAINER\.COOP\.NCTX; did you mean TRAINER\.COOP\.N_CTX"),
])
def test_unknown_names_exit_2_before_writing(opts, message, tmp_path, capsys, untouched):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        train.main(train.build_parser().parse_args(["--output-dir", str(out), *opts]))
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("opts,error,message", [
    (["MODEL.BACKBONE.NAME", "ViT-B/17"], ValueError, r"Unknown CLIP model 'ViT-B/17'; valid names: .*'ViT-B/16'"),
    (["TRAINER.COOP.PREC", "fp8"], ValueError, r"TRAINER\.COOP\.PREC must be one of fp16, fp32, amp, bf16; got 'fp8'"),
    (["INPUT.SIZE", "(64, 64)"], ValueError,
     r"INPUT\.SIZE \(64, 64\) does not match the input resolution 32 of the backbone 'RandomInit-ViT-Tiny'; set INPUT\.SIZE \(32, 32\)"),
    (["TRAINER.COOP.N_CTX", "74"], ValueError,
     r"needs 80 tokens, more than the text context length 77 of the backbone: lower N_CTX .* by at least 3"),
    # refused before the context is allocated (10 million tokens would take 2.6 GB)
    (["TRAINER.COOP.N_CTX", "10000000"], ValueError,
     r"N_CTX 10000000 does not fit the text context length 77 of the backbone .*: use at most 74"),
    (["TRAINER.COOP.N_CTX", "0"], ValueError, r"TRAINER\.COOP\.N_CTX must be >= 1; got 0"),
    (["TRAINER.COOP.N_CTX", "-3"], ValueError, r"TRAINER\.COOP\.N_CTX must be >= 1; got -3"),
])
def test_bad_model_settings(demo_root, tmp_path, opts, error, message, untouched):
    with pytest.raises(error, match=message):
        build_trainer(demo_cfg(str(demo_root / "data"), str(tmp_path / "out"), *opts))


# ---------------------------------------------------------------- datasets and images


def test_missing_dataset_root_and_split_file(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match=rf"(?s)OxfordPets: dataset not found or incomplete at {root}/oxford_pets.*"
                                                r"docs/DATASETS\.md#oxfordpets"):
        DataManager(demo_cfg(str(root), str(tmp_path / "out"), "DATASET.NAME", "OxfordPets"))
    (root / "oxford_pets" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"split file .*split_zhou_OxfordPets\.json"):
        DataManager(demo_cfg(str(root), str(tmp_path / "out"), "DATASET.NAME", "OxfordPets"))


def test_missing_class_folder_is_reported_before_training(tmp_path):
    folder = tmp_path / "data" / "imagefolder"
    make_image_folder(str(folder), ["cat", "dog", "fox"], ["RGB"] * 3)
    cfg = demo_cfg(str(tmp_path / "data"), str(tmp_path / "out"), dataset="imagefolder")
    DataManager(cfg)  # writes split_imagefolder.json
    shutil.rmtree(folder / "dog")
    before = tree_fingerprint(str(folder))
    with pytest.raises(FileNotFoundError, match=r'Datum image not found: ".*imagefolder/dog/\d\.png"'), \
            pytest.warns(UserWarning, match="No file found at"):
        DataManager(cfg)
    assert tree_fingerprint(str(folder)) == before


@pytest.mark.parametrize("content,reason", [(b"", "empty"), (b"\x89PNG\r\n\x1a\n garbage", "corrupt")])
def test_unreadable_image_is_named(tmp_path, content, reason):
    folder = tmp_path / "data" / "imagefolder"
    make_image_folder(str(folder), ["cat", "dog"], ["RGB"] * 2)
    dm = DataManager(demo_cfg(str(tmp_path / "data"), str(tmp_path / "out"), dataset="imagefolder"))
    broken = dm.dataset.test[0].impath
    with open(broken, "wb") as f:
        f.write(content)
    with pytest.raises(OSError, match=rf'Cannot read image "{re.escape(broken)}"'):
        list(dm.test_loader)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16"])
def test_non_rgb_images_become_rgb(tmp_path, mode):
    path = str(tmp_path / ("x.jpg" if mode == "CMYK" else "x.png"))
    original = odd_image(mode, 7)
    original.save(path)
    image = read_image(path)
    assert image.mode == "RGB" and image.size == original.size
    if mode == "I;16":  # the full 16-bit range maps onto 0..255 (PIL's own conversion would clip to white)
        expected = np.rint(np.asarray(original, dtype=np.float64) / 257)
        assert np.array_equal(np.asarray(image)[..., 0], expected)


def test_non_ascii_class_names_and_odd_image_modes_train_and_evaluate(tmp_path):
    classes = ["café", "北京", "Ærø_strand", "naïve piñata"]
    make_image_folder(str(tmp_path / "data" / "imagefolder"), classes, ["L", "RGBA", "CMYK", "I;16"])
    cfg = demo_cfg(str(tmp_path / "data"), str(tmp_path / "out"), "OPTIM.MAX_EPOCH", "1", dataset="imagefolder")
    trainer = build_trainer(cfg)
    assert sorted(trainer.lab2cname.values()) == sorted(classes)
    trainer.train()
    assert 0.0 <= trainer.test() <= 100.0
    assert sorted(os.listdir(tmp_path / "out" / "prompt_learner")) == ["checkpoint", "model.pth.tar-1"]


def test_num_shots_larger_than_a_class_warns_and_keeps_all(demo_root, tmp_path):
    cfg = demo_cfg(str(demo_root / "data"), str(tmp_path / "out"), "DATASET.NUM_SHOTS", "40")
    with pytest.warns(UserWarning, match=r"Demo train: 20 class\(es\) have fewer than 40 images and keep all they have: "
                                         r"'circle' \(32\)"):
        dm = DataManager(cfg)
    assert len(dm.dataset.train_x) == 20 * 32


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_of_another_trainer(demo_root, tmp_path, untouched):
    maple = build_trainer(demo_cfg(str(demo_root / "data"), str(tmp_path / "out"), trainer="MaPLe"))
    with pytest.raises(FileNotFoundError, match=r'Model not found at ".*trained/MultiModalPromptLearner/model\.pth\.tar-1": '
                                                r'".*trained" holds checkpoints of prompt_learner, not of MultiModalPromptLearner'
                                                r" — saved by another trainer\?"):
        maple.load_model(str(demo_root / "trained"), epoch=1)
    coop = build_trainer(demo_cfg(str(demo_root / "data"), str(tmp_path / "out")))
    with pytest.raises(FileNotFoundError, match=r'holds: model\.pth\.tar-1 \(check --load-epoch\)'):
        coop.load_model(str(demo_root / "trained"), epoch=5)


def test_checkpoint_of_another_class_count(demo_root, tmp_path, untouched):
    # evaluation: class-specific contexts trained on 10 base classes do not fit 20 classes
    data = str(demo_root / "data")
    csc_out = tmp_path / "csc"
    build_trainer(demo_cfg(data, str(csc_out), "OPTIM.MAX_EPOCH", "1", "DATASET.SUBSAMPLE_CLASSES", "base",
                           "TRAINER.COOP.CSC", "True")).train()
    all_classes = build_trainer(demo_cfg(data, str(tmp_path / "out"), "TRAINER.COOP.CSC", "True"))
    with pytest.raises(ValueError, match=r'Checkpoint ".*csc/prompt_learner/model\.pth\.tar-1" does not fit the model: .*'
                                         r"class count.*ctx: checkpoint \(10, 4, 64\) vs model \(20, 4, 64\)"):
        all_classes.load_model(str(csc_out), epoch=1)
    # resume: an output folder of a 10-class run re-used for a 20-class run
    shutil.copytree(demo_root / "trained", tmp_path / "reused")
    with pytest.raises(RuntimeError, match=r'Checkpoint ".*reused/prompt_learner/model\.pth\.tar-1" does not fit the model '
                                           r"\(shape mismatches: \['token_prefix: checkpoint \(10, 1, 64\) vs model \(20, 1, 64\)"
                                           r".*Use another output directory"):
        build_trainer(demo_cfg(data, str(tmp_path / "reused"), "OPTIM.MAX_EPOCH", "2")).train()
    assert tree_fingerprint(str(tmp_path / "reused")) == tree_fingerprint(str(demo_root / "trained"))


def test_nan_loss_stops_with_earlier_checkpoint_intact(demo_root, tmp_path):
    out = tmp_path / "out"
    trainer = build_trainer(demo_cfg(str(demo_root / "data"), str(out), "OPTIM.MAX_EPOCH", "3"))
    forward = trainer.model.forward

    def diverges_in_epoch_2(image):
        logits = forward(image)
        return logits * float("nan") if trainer.epoch == 1 else logits

    trainer.model.forward = diverges_in_epoch_2
    with pytest.raises(FloatingPointError, match=r"Loss is infinite or NaN! at epoch \[2/3\] batch \[1/5\]; training "
                                                 r"stopped, earlier checkpoints are kept \(lower OPTIM\.LR"):
        trainer.train()
    path, checkpoint = load_resume_checkpoint(str(out / "prompt_learner"))
    assert path.endswith("model.pth.tar-1") and checkpoint["epoch"] == 1
    assert torch.isfinite(checkpoint["state_dict"]["ctx"]).all()


def test_output_directory_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=rf'Cannot create the directory "{blocker}/out" \(Not a directory\); '
                                                 r"choose a writable location"):
        setup_logger(str(blocker / "out"))
    with pytest.raises(NotADirectoryError, match=rf'Cannot create the directory "{blocker}/prompt_learner"'):
        save_checkpoint({"state_dict": {}, "epoch": 1}, str(blocker / "prompt_learner"))
    assert blocker.read_text() == "not a folder"


def test_unwritable_output_directory(tmp_path, monkeypatch):
    # tests run as root, so permissions are simulated where the write starts
    folder = tmp_path / "prompt_learner"
    save_checkpoint({"state_dict": {"w": torch.ones(2)}, "epoch": 1}, str(folder))
    before = tree_fingerprint(str(folder))

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(PermissionError, match=r'Cannot write ".*prompt_learner/model\.pth\.tar-2" \(Permission denied\)'):
        save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "epoch": 2}, str(folder))
    assert tree_fingerprint(str(folder)) == before


def test_disk_full_during_checkpoint_write(demo_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    trainer = build_trainer(demo_cfg(str(demo_root / "data"), str(out), "OPTIM.MAX_EPOCH", "2"))
    trainer.save_model(0, str(out))
    folder = out / "prompt_learner"
    before = tree_fingerprint(str(folder))
    real_save = torch.save

    def fills_the_disk(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)  # half of it reached the disk, then no space was left
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", fills_the_disk)
    with pytest.raises(OSError, match=r'Cannot write ".*prompt_learner/model\.pth\.tar-2" \(No space left on device\); '
                                      r"its previous version, if any, is unchanged") as info:
        trainer.save_model(1, str(out))
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert tree_fingerprint(str(folder)) == before  # no partial file, no temp file, pointer unchanged
    assert load_checkpoint(str(folder / "model.pth.tar-1"))["epoch"] == 1
    assert load_resume_checkpoint(str(folder))[1]["epoch"] == 1


@pytest.mark.parametrize("cache,error", [
    ("split_imagefolder.json", r'"{path}" is not valid JSON .*delete it if it is a cache that can be rebuilt'),
    ("split_fewshot/shot_2-seed_1.pkl", r'Cache file "{path}" is damaged .*delete it and it is rebuilt on the next run'),
])
def test_damaged_cache_file_is_named(tmp_path, cache, error):
    folder = tmp_path / "data" / "imagefolder"
    make_image_folder(str(folder), ["cat", "dog"], ["RGB"] * 2)
    cfg = demo_cfg(str(tmp_path / "data"), str(tmp_path / "out"), dataset="imagefolder")
    DataManager(cfg)  # writes both caches
    path = folder / cache
    path.write_bytes(path.read_bytes()[:40])  # as a copy cut short would leave it
    with pytest.raises(ValueError, match=error.format(path=re.escape(str(path)))):
        DataManager(cfg)
