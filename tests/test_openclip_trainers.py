"""Every registered trainer takes a training step and evaluates on a tiny OpenCLIP checkpoint file
(MODEL.BACKBONE.NAME "openclip:<config.json>", MODEL.BACKBONE.PATH the weights); MaPLe, CoOp and PromptSRC
train and evaluate on it through the base-to-novel scripts."""
import os
import re
import subprocess
import sys

import pytest
import torch

from openclip_testutils import tiny_checkpoint
from trainers import BUILT_IN_TRAINERS
from trainers.method import spec_of
from trainers_testutils import REPO, clip_state, demo_trainer, same_tensors

pytest.importorskip("open_clip")


def _tiny_config(trainer: str) -> str:
    """The trainer's tiny plumbing config, or CoOp's for a trainer without one (the zero-shot ones)."""
    folder = spec_of(BUILT_IN_TRAINERS[trainer]).config_dir
    own = os.path.join("configs", "trainers", folder, "tiny.yaml")
    return f"{folder}/tiny.yaml" if os.path.isfile(os.path.join(REPO, own)) else "CoOp/tiny.yaml"


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("openclip"))
    config, checkpoint, _ = tiny_checkpoint(folder, "TinyOC-ViT", "safetensors")
    return {"data": str(tmp_path_factory.mktemp("data")),
            "opts": ["MODEL.BACKBONE.NAME", f"openclip:{config}", "MODEL.BACKBONE.PATH", checkpoint]}


# the project's trainers (the registry also holds the official-style files that other test modules register)
@pytest.mark.parametrize("name", sorted(BUILT_IN_TRAINERS))
def test_every_trainer_trains_a_step_and_evaluates_on_an_openclip_file(name, backbone, tmp_path):
    # the base half of the classes where the method can be tested on novel ones (fewer classes, faster)
    classes = "base" if spec_of(BUILT_IN_TRAINERS[name]).transfers_to_unseen else "all"
    trainer = demo_trainer(name, _tiny_config(name), backbone["data"], str(tmp_path), *backbone["opts"],
                           "OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "1", "DATASET.SUBSAMPLE_CLASSES", classes)
    holder = trainer.model if hasattr(trainer, "model") else trainer  # the probe holds the frozen CLIP itself
    assert isinstance(holder.clip_model.visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
    frozen_before = clip_state(holder)
    if trainer.get_model_names():  # a trainer with a model trains one epoch, then tests; zero-shot ones only test
        trainer.train()
    accuracy = trainer.test()
    assert 0.0 <= accuracy <= 100.0
    assert same_tensors(frozen_before, clip_state(holder))


def _script(script: str, method: str, data: str, out: str, *args: str) -> str:
    """scripts/<script> for `method` on its tiny config and one shot; its output (fails loudly)."""
    env = dict(os.environ, TRAINER=method, CFG="tiny", DATA=data, OUTPUT_ROOT=out, SHOTS="1", PYTHON=sys.executable)
    result = subprocess.run(["bash", os.path.join(REPO, "scripts", script), *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.parametrize("method", ["MaPLe", "CoOp", "PromptSRC"])
def test_base2new_scripts_train_and_evaluate_on_an_openclip_file(method, backbone, tmp_path):
    out = str(tmp_path / "out")
    opts = [*backbone["opts"], "OPTIM.MAX_EPOCH", "1"]
    log = _script("base2new_train.sh", method, backbone["data"], out, "demo", "1", *opts)
    assert re.search(r"^base accuracy: \d+(\.\d)?%$", log, re.M), log[-2000:]
    novel = _script("base2new_test.sh", method, backbone["data"], out, "demo", "1", *opts)
    assert re.search(r"^novel accuracy: \d+(\.\d)?%$", novel, re.M), novel[-2000:]
    logs = [os.path.join(folder, "log.txt") for folder, _, files in os.walk(out) if "log.txt" in files]
    text = "".join(open(path).read() for path in logs)
    assert "Image normalisation: mean" in text and "INPUT.PIXEL_STATS backbone" in text


def test_an_openclip_file_trains_under_bf16_autocast(backbone, tmp_path):
    trainer = demo_trainer("CoOp", "CoOp/tiny.yaml", backbone["data"], str(tmp_path), *backbone["opts"],
                           "OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "1", "TRAINER.COOP.PREC", "bf16")
    assert trainer.model.clip_model.dtype == torch.float32  # fp32 weights, bf16 autocast
    trainer.train()
    assert 0.0 <= trainer.test() <= 100.0
