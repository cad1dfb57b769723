"""Generic tests over every registered trainer that has a tiny (else a demo) config, as timm tests every model:
the list comes from the registry and each method's declaration (trainers/method.py), so a new method is covered
by its file and its YAML. Through train.py and predict.py: train a few steps and evaluate, save exactly the
declared trained parts, reload them on the novel classes; resume exactly; every declared precision."""
import os

import pytest
import torch

import predict
from datasets.demo import ensure_demo_data
from dassl.utils import load_checkpoint
from reliability_testutils import train_py
from trainers.method import EPOCHS, FIT, NOTHING, trained_parameter_count
from trainers_testutils import REPO, registered_cases, demo_trainer

CASES = registered_cases()
IDS = [f"{name}-{config}" for name, config, _ in CASES]
# A few steps: one shot per class (10 images of the demo's 10 base classes, batches of 4 or 8), one epoch.
SHORT = ("DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("registered") / "data")
    ensure_demo_data(os.path.join(root, "demo"))
    return root


def argv(name, config, data_root, output_dir, *opts, flags=()):
    return ["--root", data_root, "--seed", "1", "--trainer", name, "--output-dir", output_dir, *flags,
            "--dataset-config-file", os.path.join(REPO, "configs/datasets/demo.yaml"),
            "--config-file", os.path.join(REPO, "configs/trainers", config), *SHORT, *opts]


def first_image(data_root) -> str:
    folder = os.path.join(data_root, "demo", "images", "circle")
    return os.path.join(folder, sorted(os.listdir(folder))[0])


@pytest.mark.parametrize("name,config,spec", CASES, ids=IDS)
def test_train_evaluate_save_reload_on_novel_classes_and_predict(name, config, spec, data_root, tmp_path, capsys):
    run = str(tmp_path / "run")
    classes = "base" if spec.transfers_to_unseen else "all"
    if spec.training == NOTHING:
        trainer = train_py(*argv(name, config, data_root, run, "DATASET.SUBSAMPLE_CLASSES", classes, flags=["--eval-only"]))
        assert trained_parameter_count(trainer) == 0 and not trainer.get_model_names()
        assert "* accuracy:" in capsys.readouterr().out
        return
    initial = demo_trainer(name, config, data_root, str(tmp_path / "unused"), *SHORT, "DATASET.SUBSAMPLE_CLASSES", classes)
    trainer = train_py(*argv(name, config, data_root, run, "DATASET.SUBSAMPLE_CLASSES", classes))
    assert "* accuracy:" in capsys.readouterr().out
    (model_name,) = trainer.get_model_names()
    module = trainer._models[model_name]
    names = [n for n, p in module.named_parameters() if p.requires_grad or spec.training == FIT]
    assert trained_parameter_count(trainer) == sum(dict(module.named_parameters())[n].numel() for n in names) > 0
    saved = load_checkpoint(os.path.join(run, model_name, "model.pth.tar-1"))["state_dict"]
    # the checkpoint holds exactly the declared trained parameters (and buffers), none of the frozen CLIP
    assert sorted(k for k in saved if k in dict(module.named_parameters())) == sorted(names)
    before = dict(initial._models[model_name].named_parameters())
    after = dict(module.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in names), "nothing was trained"
    if hasattr(getattr(trainer, "model", None), "clip_model"):
        assert all(torch.equal(p, q) for p, q in zip(initial.model.clip_model.state_dict().values(),
                                                      trainer.model.clip_model.state_dict().values()))
    # reloaded on the novel classes (base -> novel), or on the same classes for a method that cannot transfer
    novel = "new" if spec.transfers_to_unseen else "all"
    evaluated = train_py(*argv(name, config, data_root, str(tmp_path / "eval"), "DATASET.SUBSAMPLE_CLASSES", novel,
                               flags=["--eval-only", "--model-dir", run, "--load-epoch", "1"]))
    reloaded = dict(evaluated._models[model_name].named_parameters())
    assert all(torch.equal(reloaded[n].cpu(), saved[n].cpu()) for n in names)
    assert "* accuracy:" in capsys.readouterr().out
    image = first_image(data_root)
    assert predict.main(["--model-dir", run, image, "--topk", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: ")


@pytest.mark.parametrize("name,config,spec", [c for c in CASES if c[2].training == EPOCHS],
                         ids=[i for i, c in zip(IDS, CASES) if c[2].training == EPOCHS])
def test_resumed_run_equals_the_uninterrupted_one(name, config, spec, data_root, tmp_path):
    opts = ("DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "2", "TEST.NO_TEST", "True")
    full = demo_trainer(name, config, data_root, str(tmp_path / "full"), *opts)
    full.train()
    cut = demo_trainer(name, config, data_root, str(tmp_path / "cut"), *opts)
    after_epoch = cut.after_epoch

    def after_epoch_then_stop():
        after_epoch()
        if cut.epoch == 0:
            raise KeyboardInterrupt  # killed after the first epoch's checkpoint

    cut.after_epoch = after_epoch_then_stop
    with pytest.raises(KeyboardInterrupt):
        cut.train()
    resumed = demo_trainer(name, config, data_root, str(tmp_path / "cut"), *opts)
    resumed.train()
    assert resumed.start_epoch == 1
    (model_name,) = full.get_model_names()
    expected, got = full._models[model_name].state_dict(), resumed._models[model_name].state_dict()
    # a module's extra state (Tip-Adapter's class names) is a plain value, not a tensor
    assert all(torch.equal(expected[k], got[k]) if torch.is_tensor(expected[k]) else expected[k] == got[k]
               for k in expected)


@pytest.mark.parametrize("name,config,spec", CASES, ids=IDS)
def test_every_declared_precision_steps_and_predicts(name, config, spec, data_root, tmp_path):
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    classes = "base" if spec.transfers_to_unseen else "all"
    for prec in spec.precisions:
        trainer = demo_trainer(name, config, data_root, str(tmp_path / prec), *SHORT, spec.precision_key, prec,
                               "DATASET.SUBSAMPLE_CLASSES", classes)
        if spec.training == EPOCHS:
            trainer.set_model_mode("train")
            trainer.batch_idx, trainer.num_batches = 0, 2  # one step, not the last of the epoch
            trainer.forward_backward(next(iter(trainer.train_loader_x)))
            params = [p for p in trainer.model.parameters() if p.requires_grad]
            assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in params), prec
        trainer.set_model_mode("eval")
        with torch.no_grad():
            scores = torch.as_tensor(trainer.model_inference(images))
        assert scores.shape[0] == 2 and torch.isfinite(scores).all(), prec
