"""A catalogue of bad inputs: each gets an error a person can act on (asserted below), and none of them
damages anything already on disk (the dataset, earlier checkpoints)."""
import errno
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import api
import predict
import train
from dassl.config import ConfigError
from dassl.data import DataManager
from dassl.engine import build_trainer
from dassl.utils import load_checkpoint, load_resume_checkpoint, read_image, save_checkpoint, setup_logger
from dassl.utils.errors import TRACEBACK_ENV, UserError, run_command
from dassl.utils.tools import MAX_PIXELS_ENV
from datasets.check import __main__ as check_cli
from datasets.demo import ensure_demo_data
from datasets.imagenet import read_classnames
from datasets.layout import DatasetFileError
from reliability_testutils import ROOT, demo_cfg, make_image_folder, odd_image, train_py_error, tree_fingerprint


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


@pytest.mark.parametrize("trainer, n_tokens", [("IVLP", "10000000"), ("VPT", "18"), ("VPT", "0")])
def test_vision_prompt_tokens_are_bounded_by_the_image_tokens(demo_root, tmp_path, trainer, n_tokens, untouched):
    # The tiny backbone has 17 image tokens (CLS + 4x4 patches); a huge count is refused before any allocation.
    with pytest.raises(ValueError, match=rf"TRAINER\.{trainer}\.N_CTX_VISION must be between 1 and 17, the "
                                         rf"backbone's own image tokens .*; got {n_tokens}$"):
        build_trainer(demo_cfg(str(demo_root / "data"), str(tmp_path / "out"), f"TRAINER.{trainer}.N_CTX_VISION",
                               n_tokens, trainer=trainer))


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


# ---------------------------------------------------------------- one error style (dassl/utils/errors.py)


def test_user_error_is_one_line_internal_error_keeps_its_traceback(capsys, monkeypatch):
    def user_error():
        raise ConfigError("first part\n  second part; do this")

    with pytest.raises(SystemExit) as exit_info:
        run_command("prog", user_error)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "prog: error: first part; second part; do this\n"
    monkeypatch.setenv(TRACEBACK_ENV, "1")  # debugging: the traceback of a user error too
    with pytest.raises(SystemExit):
        run_command("prog", user_error)
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("prog: error: first part; second part; do this\n")

    def bug():
        raise KeyError("internal")

    with pytest.raises(KeyError, match="internal"):  # not the user's to fix: the traceback stays
        run_command("prog", bug)
    assert run_command("prog", lambda: 7) == 7


@pytest.mark.parametrize("flags,message", [
    (["--model-dir", "x"], r"--model-dir is used only with --eval-only .*add --eval-only to evaluate that model"),
    (["--load-epoch", "2"], r"--load-epoch is used only with --eval-only"),
    (["--resume", "{tmp}/nowhere"], r"--resume .*/nowhere: no such folder; give the output folder of the run to resume"),
    (["--eval-only", "--model-dir", "{tmp}", "--resume", "{tmp}"], r"--resume has no effect with --eval-only"),
    (["--eval-only", "--model-dir", "{tmp}", "--no-train"], r"--no-train has no effect with --eval-only"),
    (["--force", "--resume", "{tmp}"], r"--force moves the output folder's run aside, so there would be nothing to"),
    (["--eval-only", "--model-dir", "{tmp}/nowhere"], r"--model-dir .*/nowhere: no such folder or file"),
])
def test_flags_that_do_nothing_or_contradict_are_refused(flags, message, tmp_path, capsys):
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    line = train_py_error(capsys, "--output-dir", str(tmp_path / "out"), "--trainer", "CoOp", *flags)
    assert re.search(message, line), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("opts,message", [
    (["OPTIM.MAX_EPOCH", "0"], r"OPTIM\.MAX_EPOCH must be >= 1 to train; got 0 \(to evaluate a model without training, "
                               r"use --eval-only\)"),
    (["DATALOADER.TRAIN_X.BATCH_SIZE", "0"], r"DATALOADER\.TRAIN_X\.BATCH_SIZE must be >= 1 \(images per training batch\)"),
    (["DATALOADER.TEST.BATCH_SIZE", "-1"], r"DATALOADER\.TEST\.BATCH_SIZE must be >= 1"),
    (["DATALOADER.NUM_WORKERS", "-2"], r"DATALOADER\.NUM_WORKERS must be >= 0"),
    (["OPTIM.LR", "0.0"], r"OPTIM\.LR must be > 0 to train; got 0\.0"),
    (["INPUT.SIZE", "(0, 32)"], r"INPUT\.SIZE must be two positive integers \(height, width\); got \(0, 32\)"),
    (["DATASET.VAL_PERCENT", "1.5"], r"DATASET\.VAL_PERCENT must be in \[0, 1\); got 1\.5"),
])
def test_config_values_out_of_range_are_named(demo_root, opts, message, tmp_path, capsys):
    line = train_py_error(capsys, "--root", str(demo_root / "data"), "--output-dir", str(tmp_path / "out"),
                          "--trainer", "CoOp", "DATASET.NAME", "Demo", *opts)
    assert re.search(message, line), line
    assert not (tmp_path / "out").exists()


def test_backbone_errors_end_in_one_line(demo_root, tmp_path, capsys):
    line = train_py_error(capsys, "--root", str(demo_root / "data"), "--output-dir", str(tmp_path / "out"),
                          "--trainer", "CoOp", "DATASET.NAME", "Demo", "DATALOADER.NUM_WORKERS", "0",
                          "MODEL.BACKBONE.NAME", "ViT-B/17")
    assert re.match(r"train\.py: error: MODEL\.BACKBONE \(NAME 'ViT-B/17', PATH ''\): Unknown CLIP model 'ViT-B/17'", line)


def test_num_shots_below_one_means_all_images(demo_root, tmp_path):
    dm = DataManager(demo_cfg(str(demo_root / "data"), str(tmp_path / "out"), "DATASET.NUM_SHOTS", "0"))
    assert len(dm.dataset.train_x) == len(DataManager(demo_cfg(str(demo_root / "data"), str(tmp_path / "out"),
                                                               "DATASET.NUM_SHOTS", "-1")).dataset.train_x) == 20 * 32


@pytest.mark.parametrize("text,message", [
    ("OPTIM:\n  LR: 0.1\n   MAX_EPOCH: 2\n", r"trainer config file .*bad\.yaml: YAML syntax error at line 3, column 13: "
                                             r"mapping values are not allowed here"),
    ("", r"trainer config file .*bad\.yaml is empty; it must hold config keys"),
    ("- OPTIM.LR\n- 0.1\n", r"trainer config file .*bad\.yaml holds a list, not a mapping of config keys"),
    ("OPTIM:\n  LR: fast\n", r"trainer config file .*bad\.yaml: config key OPTIM\.LR expects a value of type float"),
])
def test_bad_config_file_is_named_with_its_line(text, message, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text(text)
    line = train_py_error(capsys, "--output-dir", str(tmp_path / "out"), "--config-file", str(tmp_path / "bad.yaml"))
    assert re.search(message, line), line


# ---------------------------------------------------------------- data files


def test_malformed_split_file_names_file_and_entry(tmp_path):
    folder = tmp_path / "data" / "imagefolder"
    make_image_folder(str(folder), ["cat", "dog"], ["RGB"] * 2)
    cfg = demo_cfg(str(tmp_path / "data"), str(tmp_path / "out"), dataset="imagefolder")
    DataManager(cfg)  # writes split_imagefolder.json
    split_file = folder / "split_imagefolder.json"
    good = json.loads(split_file.read_text())
    path = re.escape(str(split_file))
    cases = [
        ({"train": good["train"], "test": good["test"]}, rf'split file "{path}" must be an object with the lists '
                                                        r"train, val, test; found \['test', 'train'\]"),
        ({**good, "val": [["cat/0.png", "0", "cat"]]}, rf"split file \"{path}\": val\[0\] \['cat/0\.png', '0', 'cat'\] "
                                                      r"is not \[relative image path, label >= 0, class name\]"),
        ({**good, "test": [["dog/1.png", 0, "dog"]]}, r"test\[0\] .* names label 0 'dog', but train\[0\] names it 'cat'"),
    ]
    for content, message in cases:
        split_file.write_text(json.dumps(content))
        with pytest.raises(DatasetFileError, match=message):
            DataManager(cfg)


@pytest.mark.parametrize("text,message", [
    ("n01 tench\nn02\n", r'class-name file ".*classnames\.txt", line 2: \'n02\' has no class name'),
    ("n01 tench\n\nn01 goldfish\n", r"line 3: the folder 'n01' is named a second time"),
])
def test_malformed_class_name_file_names_the_line(text, message, tmp_path):
    (tmp_path / "classnames.txt").write_text(text)
    with pytest.raises(DatasetFileError, match=message):
        read_classnames(str(tmp_path / "classnames.txt"))


def test_dataset_check_of_an_image_folder(tmp_path, capsys):
    # the command docs/DATASETS.md gives: it used to fail on a key the checker's config lacked
    assert check_cli.main(["--root", str(tmp_path), "imagefolder"]) == 1
    assert "ImageFolder          missing" in capsys.readouterr().out
    make_image_folder(str(tmp_path / "imagefolder"), ["cat", "dog"], ["RGB"] * 2)
    assert check_cli.main(["--root", str(tmp_path), "imagefolder"]) == 0
    assert re.search(r"ImageFolder +found .*\n +2 classes  train 10  val 4  test 6", capsys.readouterr().out)


# ---------------------------------------------------------------- images, by path and as PIL objects


def high_depth_image(kind: str) -> Image.Image:
    values = np.linspace(0.0, 1.0, 144).reshape(12, 12)
    if kind == "int32 (16-bit data)":
        return Image.fromarray(np.rint(values * 65535).astype(np.int32))
    if kind == "int32 (full range)":
        return Image.fromarray(np.rint(values * (2**31 - 1)).astype(np.int32))
    return Image.fromarray(values.astype(np.float32))  # "float32"


@pytest.mark.parametrize("kind", ["int32 (16-bit data)", "int32 (full range)", "float32"])
def test_32_bit_tiffs_are_scaled_over_their_range(kind, tmp_path):
    path = str(tmp_path / "x.tif")
    high_depth_image(kind).save(path)
    grey = np.asarray(read_image(path))[..., 0]
    # a 0..max ramp becomes a 0..255 ramp (PIL alone gives all black for floats, near white for integers)
    assert np.array_equal(grey.reshape(-1), np.rint(np.linspace(0, 255, 144)).astype(np.uint8))


@pytest.fixture(scope="module")
def tiny_classifier():
    return api.zero_shot_clip(["cat", "dog"], config_file=os.path.join(ROOT, "configs", "trainers", "CoOp", "tiny.yaml"),
                              opts=["USE_CUDA", "False"])


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "P", "CMYK"])
def test_an_image_object_is_read_like_its_file(tiny_classifier, mode, tmp_path):
    image = odd_image("I;16", 3) if mode == "I;16" else high_depth_image("float32") if mode == "F" else \
        high_depth_image("int32 (full range)") if mode == "I" else odd_image(mode, 3)
    path = str(tmp_path / ("x.jpg" if mode == "CMYK" else "x.tif"))
    image.save(path)
    with Image.open(path) as opened:
        assert torch.equal(tiny_classifier.preprocess(opened), tiny_classifier.preprocess(path))


def test_decompression_bomb_is_refused_naming_file_and_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    path = str(tmp_path / "big.png")
    odd_image("RGB", 1).save(path)  # 144 pixels, more than twice a limit of 50
    monkeypatch.setenv(MAX_PIXELS_ENV, "50")
    with pytest.raises(OSError, match=rf'Cannot read image "{re.escape(path)}": Image size \(144 pixels\) exceeds limit'
                                      rf".*raise the limit with the environment variable {MAX_PIXELS_ENV}=<pixels> "
                                      r"\(0 = no limit\)"):
        read_image(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "0")
    assert read_image(path).size == (12, 12)


@pytest.mark.parametrize("call,error,message", [
    (lambda c: c.classify("x.png", topk="3"), TypeError, "topk must be an int; got str"),
    (lambda c: c.logits(torch.zeros(2, 32, 32)), ValueError, r"image tensors must be \[3, H, W\] or \[N, 3, H, W\]; "
                                                             r"got shape \(2, 32, 32\)"),
    (lambda c: c.logits(np.zeros((3, 32, 32))), TypeError, "images must be paths, PIL images or tensors; got ndarray"),
    (lambda c: api.zero_shot_clip({"cat", "dog"}), TypeError, r"classnames must be a list of names \(in label order\); "
                                                               "got set"),
])
def test_api_arguments_of_wrong_type_or_shape_are_named(tiny_classifier, call, error, message):
    with pytest.raises(error, match=message) as info:
        call(tiny_classifier)
    assert isinstance(info.value, UserError)


def test_predict_flags_and_csv_path_are_checked_before_any_work(tmp_path, monkeypatch, capsys):
    image = str(tmp_path / "x.png")
    odd_image("RGB", 1).save(image)

    def must_not_load(args):
        raise AssertionError("the classifier was loaded before the --csv path was checked")

    monkeypatch.setattr(predict, "load_classifier", must_not_load)
    for flags, message in [(["--csv", str(tmp_path)], r"--csv .* is a folder; give a file name, e\.g\. .*predictions\.csv"),
                           (["--csv", str(tmp_path / "no" / "p.csv")], r"the folder .*/no does not exist"),
                           (["--epoch", "2"], r"--epoch has no effect with --zero-shot")]:
        with pytest.raises(SystemExit) as exit_info:
            predict.main(["--zero-shot", "--classnames", "a,b", image, *flags])
        assert exit_info.value.code == 2
        assert re.search(message, capsys.readouterr().err)
