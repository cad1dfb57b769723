"""An official-style CoOp trainer file (tests/official_style_coop.py: Dassl's TrainerX plus `from clip import
clip` with _MODELS/_download/torch.jit.load/build_model/tokenize and CLIP's submodules) runs through train.py
unchanged: base-class training, then eval-only on the novel classes from the saved checkpoint.

The backbone is a tiny random CLIP saved as an OpenAI TorchScript archive in the download cache, under a
model name whose URL carries the file's SHA-256 (tests/official_style_backbone.py), so `clip._download`
verifies and returns the cached file without any network."""
import os
import re
import subprocess
import sys

from clip.download import CACHE_ENV, sha256_of
from clip.random_models import random_state_dict, save_openai_format
from dassl.utils import load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
ARCHITECTURE = "RandomInit-ViT-Tiny"
# The plugin's model name and the variable it reads the SHA-256 from (it needs that variable at import,
# so these are not imported from it).
NAME = "TinyTest"
SHA256_ENV = "OFFICIAL_STYLE_BACKBONE_SHA256"


def _train(args, env):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"),
         "--import", "official_style_backbone", "--import", "official_style_coop", "--trainer", "OfficialStyleCoOp",
         "--dataset-config-file", os.path.join(ROOT, "configs/datasets/demo.yaml"),
         "--config-file", os.path.join(ROOT, "configs/trainers/CoOp/tiny.yaml"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )


def _accuracies(text):
    return re.findall(r"\* accuracy: ([\d.]+)%", text)


def test_official_style_coop_trains_on_base_and_evaluates_on_new(tmp_path):
    cache = tmp_path / "clip_cache"
    cache.mkdir()
    state_dict = random_state_dict(ARCHITECTURE)
    backbone = str(cache / f"{NAME}.pt")
    save_openai_format(state_dict, backbone, fmt="torchscript")
    digest = sha256_of(backbone)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, ROOT]), **{CACHE_ENV: str(cache), SHA256_ENV: digest})
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    common = ["--root", data, "--seed", "1", "MODEL.BACKBONE.NAME", NAME, "TRAINER.COOP.PREC", "fp32",
              "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1"]

    trained = _train(["--output-dir", out, *common, "DATASET.SUBSAMPLE_CLASSES", "base"], env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    log = open(os.path.join(out, "log.txt")).read()
    for line in ("Loading trainer: OfficialStyleCoOp", f"Loading CLIP (backbone: {NAME})",
                 "Initializing a generic context", 'Initial context: "X X X X"', "epoch [1/1] batch [2/2]",
                 "SUBSAMPLE BASE CLASSES!", "prompt_learner/model.pth.tar-1", "Evaluate on the *test* set"):
        assert line in log, line
    assert len(_accuracies(log)) == 1
    # the backbone came from the verified cache: the file is still the one written above
    assert os.listdir(cache) == [f"{NAME}.pt"] and sha256_of(backbone) == digest

    checkpoint = load_checkpoint(os.path.join(out, "prompt_learner", "model.pth.tar-1"))
    assert checkpoint["epoch"] == 1
    learned = checkpoint["state_dict"]
    assert set(learned) == {"ctx", "token_prefix", "token_suffix"}
    width = state_dict["ln_final.weight"].shape[0]
    assert tuple(learned["ctx"].shape) == (4, width)  # N_CTX 4 from the demo config, width from the model

    # eval-only on the novel classes: load_model drops the base classes' token buffers from our checkpoint
    evaluated = _train(["--output-dir", str(tmp_path / "eval"), "--eval-only", "--model-dir", out,
                        "--load-epoch", "1", *common, "DATASET.SUBSAMPLE_CLASSES", "new"], env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "SUBSAMPLE NEW CLASSES!" in evaluated.stdout
    assert f'Loading weights to prompt_learner from "{os.path.join(out, "prompt_learner", "model.pth.tar-1")}" ' \
           "(epoch = 1)" in evaluated.stdout
    assert len(_accuracies(evaluated.stdout)) == 1
