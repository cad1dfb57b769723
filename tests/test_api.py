"""The Python API (api.py) gives the trainer's own evaluation results on the same images, for a trained
PromptSRC run (base and novel classes) and for zero-shot CLIP, and rejects bad inputs clearly."""
import os
import re

import pytest
import torch
from PIL import Image

import api
from dassl.data.datasets import build_dataset
from dassl.engine import build_trainer
from promptsrc_testutils import DEMO_EPOCHS, demo_base2new_run
from trainers_testutils import demo_trainer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return demo_base2new_run(tmp_path_factory)


def trainer_evaluation(trainer):
    """(logits, image paths, labels) of the trainer's own test-set evaluation path."""
    trainer.set_model_mode("eval")
    logits, paths, labels = [], [], []
    with torch.no_grad():
        for batch in trainer.test_loader:
            image, label = trainer.parse_batch_test(batch)
            logits.append(trainer.model_inference(image).float())
            paths += list(batch["impath"])
            labels.append(label)
    return torch.cat(logits), paths, torch.cat(labels)


def accuracy(logits, labels) -> float:
    return round(100.0 * float((logits.argmax(dim=1) == labels).float().mean()), 1)


def test_api_equals_the_trainers_evaluation_on_base_classes(run):
    train_dir = run["train_dir"]
    trainer = build_trainer(api.build_config(os.path.join(train_dir, "config.yaml")))
    trainer.load_model(train_dir, epoch=DEMO_EPOCHS)
    expected, paths, labels = trainer_evaluation(trainer)

    model = api.load_prompted_clip(train_dir)  # class names: the run's own (base) classes
    assert model.classnames == list(trainer.dm.dataset.classnames)
    assert model.checkpoint.endswith(f"model.pth.tar-{DEMO_EPOCHS}")
    logits = model.logits(paths)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    base = float(re.search(r"^base accuracy: ([\d.]+)%", run["log"], re.M).group(1))
    assert accuracy(logits, labels) == base

    # PIL images, a preprocessed tensor batch and a checkpoint file give the same
    pil = [Image.open(p) for p in paths[:3]]
    torch.testing.assert_close(model.logits(pil), expected[:3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(model.preprocess(paths[:3])), expected[:3], atol=1e-5, rtol=1e-5)
    by_file = api.load_prompted_clip(os.path.join(train_dir, "VLPromptLearner", f"model.pth.tar-{DEMO_EPOCHS}"))
    torch.testing.assert_close(by_file.logits(paths[:3]), expected[:3], atol=1e-5, rtol=1e-5)
    ranked = model.classify(paths[0], topk=2)
    assert len(ranked) == 1 and len(ranked[0]) == 2 and ranked[0][0][1] >= ranked[0][1][1]
    assert ranked[0][0][0] == model.classnames[int(expected[0].argmax())]
    torch.testing.assert_close(model.predict_proba(paths[:2]).sum(dim=1), torch.ones(2))


def test_api_on_novel_classes_matches_the_test_script(run):
    novel_cfg = api.build_config(os.path.join(run["train_dir"], "config.yaml"),
                                 opts=["DATASET.SUBSAMPLE_CLASSES", "new"])
    dataset = build_dataset(novel_cfg)
    model = api.load_prompted_clip(run["train_dir"], dataset.classnames)
    logits = model.logits([item.impath for item in dataset.test])
    labels = torch.tensor([item.label for item in dataset.test])
    match = re.search(r"^novel accuracy: ([\d.]+)%", run["novel_log"], re.M)
    assert accuracy(logits, labels) == float(match.group(1))


def test_zero_shot_api_equals_the_zero_shot_trainer(tmp_path):
    trainer = demo_trainer("ZeroshotCLIP", "CoOp/tiny.yaml", str(tmp_path / "data"), str(tmp_path / "out"))
    expected, paths, _ = trainer_evaluation(trainer)
    model = api.zero_shot_clip(trainer.dm.dataset.classnames, config_file=os.path.join("configs", "trainers",
                                                                                      "CoOp", "tiny.yaml"),
                               dataset_config_file=os.path.join("configs", "datasets", "demo.yaml"))
    torch.testing.assert_close(model.logits(paths), expected, atol=1e-5, rtol=1e-5)


def test_bad_inputs_get_clear_errors(run, tmp_path):
    train_dir = run["train_dir"]
    with pytest.raises(FileNotFoundError, match="config.yaml not found.*config_file"):
        api.load_prompted_clip(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not found"):
        api.load_prompted_clip(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="empty"):
        api.load_prompted_clip(train_dir, [])
    with pytest.raises(ValueError, match="duplicate class names: \\['cat'\\]"):
        api.load_prompted_clip(train_dir, ["cat", "dog", "cat"])
    with pytest.raises(TypeError, match="list of names"):
        api.load_prompted_clip(train_dir, "cat")
    with pytest.raises(FileNotFoundError, match="model.pth.tar-99"):
        api.load_prompted_clip(train_dir, ["cat", "dog"], epoch=99)
    model = api.load_prompted_clip(train_dir, ["cat", "dog"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(OSError, match="broken.png"):
        model.logits([str(broken)])
    with pytest.raises(ValueError, match="no images"):
        model.logits([])


def test_class_specific_context_needs_its_class_count(tmp_path):
    # CoOp with class-specific context learns one context per class: another class list cannot fit it
    opts = ("TRAINER.COOP.CSC", "True")
    trainer = demo_trainer("CoOp", "CoOp/tiny.yaml", str(tmp_path / "data"), str(tmp_path / "run"), *opts)
    trainer.train()
    configs = dict(config_file=os.path.join("configs", "trainers", "CoOp", "tiny.yaml"),
                   dataset_config_file=os.path.join("configs", "datasets", "demo.yaml"), opts=list(opts))
    with pytest.raises(ValueError, match="unknown trainer ''"):
        api.load_prompted_clip(str(tmp_path / "run"), ["cat", "dog"], **configs)
    configs["trainer"] = "CoOp"
    with pytest.raises(ValueError, match="does not fit a CoOp model for 2 classes.*ctx"):
        api.load_prompted_clip(str(tmp_path / "run"), ["cat", "dog"], **configs)
    model = api.load_prompted_clip(str(tmp_path / "run"), trainer.dm.dataset.classnames, **configs)
    assert model.checkpoint.endswith("model.pth.tar-1")
