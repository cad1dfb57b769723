"""Zero-shot CLIP in the base-to-novel protocol, for real: the scripts evaluate it on the base and the novel
classes (nothing to train), and the engine handles a trainer that registers no model without a raw error.
The scripts' commands and paths are tested with a stand-in train.py in test_scripts_protocols.py."""
import os
import subprocess

import pytest

from dassl.engine.trainer import TrainerBase
from scripts.logs import newest_result
from trainers_testutils import TINY, demo_trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tiny random backbone, named explicitly: the demo configs may name another.
FAST = ["MODEL.BACKBONE.NAME", TINY, "INPUT.SIZE", "(32,32)"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    # generated on first use, once for the tests of this file
    return str(tmp_path_factory.mktemp("data"))


def run_script(script: str, data: str, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CFG", "LOADEP", "EXTRA_OPTS", "SUB", "FORCE", "CHECK_FINISHED", "MODEL_DIR")}
    env.update({"TRAINER": "ZeroshotCLIP", "DATA": data, "OUTPUT_ROOT": "out", "SHOTS": "4"})
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", script), "demo", "1", *FAST],
                          cwd=tmp_path, env=env, capture_output=True, text=True)


def test_base2new_scripts_evaluate_zero_shot_clip_on_base_then_novel_classes(data_root, tmp_path):
    train = run_script("base2new_train.sh", data_root, tmp_path)
    assert train.returncode == 0, train.stdout + train.stderr
    test = run_script("base2new_test.sh", data_root, tmp_path)
    assert test.returncode == 0, test.stdout + test.stderr

    common = os.path.join("demo", "shots_4", "ZeroshotCLIP", "demo", "seed1")
    base = newest_result(os.path.join(str(tmp_path), "out", "base2new", "test_base", common), test_log=True)
    novel = newest_result(os.path.join(str(tmp_path), "out", "base2new", "test_new", common), test_log=True)
    assert base is not None and novel is not None
    assert train.stdout.rstrip().endswith(f"base accuracy: {base.value:g}%")
    assert test.stdout.rstrip().endswith(f"novel accuracy: {novel.value:g}%")
    assert not os.path.exists(os.path.join(str(tmp_path), "out", "base2new", "train_base"))


def test_a_trainer_without_registered_models_has_nothing_to_resume(tmp_path):
    assert TrainerBase().resume_model_if_exist(str(tmp_path)) == 0


def test_training_zero_shot_clip_is_refused_with_the_way_to_evaluate_it(data_root, tmp_path):
    trainer = demo_trainer("ZeroshotCLIP", "CoOp/tiny.yaml", data_root, str(tmp_path / "out"), *FAST)
    with pytest.raises(RuntimeError, match="ZeroshotCLIP registers no model.*--eval-only"):
        trainer.train()
