"""Helpers for the PromptSRC, API and predict.py tests: a PromptSRC base-to-novel run on the Demo dataset,
trained once per test session through scripts/base2new_train.sh, and tiny bare PromptSRC models."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict
from typing import Sequence

import torch

from clip.model import CLIP
from clip.random_models import RANDOM_MODELS
from trainers.common import SpeedOptions
from trainers.independentVL import VLPromptLearner
from trainers.promptsrc import PromptSRCCLIP, gpa_weights
from trainers_testutils import REPO, fp32_clip, method_cfg

DEMO_CONFIG = "PromptSRC/tiny.yaml"
DEMO_EPOCHS = 3  # OPTIM.MAX_EPOCH of PromptSRC/tiny.yaml
CLASSNAMES = ["cat", "golden_retriever", "aircraft carrier"]


def tiny_promptsrc(classnames: Sequence[str] = CLASSNAMES, *opts: str) -> PromptSRCCLIP:
    """A PromptSRC model on the fp32 tiny backbone with the demo config's prompts."""
    cfg = method_cfg(DEMO_CONFIG, *opts)
    clip_model = fp32_clip()
    learner = VLPromptLearner(cfg, classnames, clip_model, method="PROMPTSRC")
    node = cfg.TRAINER.PROMPTSRC
    weights = gpa_weights(node.GPA_MEAN, node.GPA_STD, cfg.OPTIM.MAX_EPOCH)
    return PromptSRCCLIP(clip_model, learner, SpeedOptions(), classnames, weights)


def uninitialised_clip(name: str) -> CLIP:
    """The architecture `name` (e.g. RandomInit-ViT-B/16) with uninitialised weights: enough to count the
    parameters a method adds, in a fraction of the time random initialisation takes."""
    with torch.device("meta"):
        model = CLIP(**asdict(RANDOM_MODELS[name]))
    return model.to_empty(device="cpu").half()


def run_script(script: str, data_root: str, output_root: str, *args: str, **env: str) -> str:
    """Run scripts/<script> with TRAINER=PromptSRC on the tiny plumbing config; returns its output (fails loudly)."""
    environ = dict(os.environ, TRAINER="PromptSRC", CFG="tiny", DATA=data_root, OUTPUT_ROOT=output_root,
                   PYTHON=sys.executable, **env)
    result = subprocess.run(["bash", os.path.join(REPO, "scripts", script), *args], cwd=REPO, env=environ,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


_RUN_CACHE: dict = {}


def demo_base2new_run(tmp_path_factory) -> dict:
    """Train PromptSRC on the base classes of Demo (seed 1) and evaluate it on the novel ones through the
    scripts, once per session: {"data": data root, "out": output root, "train_dir": run folder,
    "log": output of base2new_train.sh, "novel_log": output of base2new_test.sh}."""
    if not _RUN_CACHE:
        root = tmp_path_factory.mktemp("promptsrc_run")
        data, out = str(root / "data"), str(root / "output")
        log = run_script("base2new_train.sh", data, out, "demo", "1")
        novel_log = run_script("base2new_test.sh", data, out, "demo", "1")
        train_dir = os.path.join(out, "base2new", "train_base", "demo", "shots_16", "PromptSRC", "tiny", "seed1")
        _RUN_CACHE.update(data=data, out=out, train_dir=train_dir, log=log, novel_log=novel_log)
    return _RUN_CACHE
