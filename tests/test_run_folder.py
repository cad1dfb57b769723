"""A run folder belongs to one run (dassl/engine/run_folder.py): a re-run resumes or skips it only with the same
result-deciding config; any other config stops with one line naming the differing keys before anything in the
folder changes; --force (FORCE=1) moves the old run aside. Also --model-dir with one checkpoint file."""
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

import api
from dassl.engine.run_folder import NON_RESULT_KEYS, RunIdentity, decides_result, differing_keys
from dassl.utils import load_checkpoint
from datasets.demo import ensure_demo_data
from reliability_testutils import ROOT, train_py, train_py_error, tree_fingerprint

COOP_TINY = os.path.join(ROOT, "configs", "trainers", "CoOp", "tiny.yaml")
DEMO = os.path.join(ROOT, "configs", "datasets", "demo.yaml")
# The config the base-to-novel training script gives train.py for TRAINER=CoOp CFG=tiny SHOTS=2 on the demo.
BASE_RUN_OPTS = ("DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", "1")


def coop_argv(data: str, *opts: str, flags=(), output_dir: str = "") -> list:
    """train.py's arguments for the fixture's run, with extra flags and KEY VALUE overrides (which come last)."""
    out = ["--output-dir", output_dir] if output_dir else []
    return ["--root", data, *out, "--trainer", "CoOp", "--seed", "1", "--dataset-config-file", DEMO,
            "--config-file", COOP_TINY, *flags, *BASE_RUN_OPTS, *opts]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The demo data and a finished 1-epoch CoOp run on the base classes (the script's config for CFG=tiny)."""
    root = tmp_path_factory.mktemp("run_folder")
    data = str(root / "data")
    ensure_demo_data(os.path.join(data, "demo"))
    run = str(root / "run")
    train_py(*coop_argv(data, output_dir=run))
    return data, run


@pytest.fixture
def run_copy(finished, tmp_path):
    data, run = finished
    copy = str(tmp_path / "run")
    shutil.copytree(run, copy)
    return data, copy


def test_result_deciding_keys_are_all_but_the_listed_ones():
    assert not decides_result("OUTPUT_DIR") and not decides_result("DATALOADER.NUM_WORKERS")
    assert decides_result("OPTIM.LR") and decides_result("TRAINER.SPEEDUPS.COMPILE")
    old = {"OPTIM.LR": 0.1, "SEED": 1, "TRAIN.PRINT_FREQ": 5, "GONE": 1}
    new = {"OPTIM.LR": 0.2, "SEED": 1, "TRAIN.PRINT_FREQ": 9, "NEW": 2}
    assert differing_keys(old, new) == [("GONE", 1, "<absent>"), ("NEW", "<absent>", 2), ("OPTIM.LR", 0.1, 0.2)]
    assert len(set(NON_RESULT_KEYS)) == len(NON_RESULT_KEYS)


def test_rerun_with_another_config_is_refused_before_touching_the_folder(run_copy, capsys):
    data, run = run_copy
    before = tree_fingerprint(run)
    line = train_py_error(capsys, *coop_argv(data, "OPTIM.MAX_EPOCH", "2", flags=["--seed", "2"], output_dir=run))
    assert line == (f'train.py: error: the output folder "{run}" holds another run: its config.yaml differs in '
                    f"OPTIM.MAX_EPOCH 1 -> 2, SEED 1 -> 2; use another --output-dir, or add --force (scripts: FORCE=1) "
                    f"to move the old run aside to {run}.old-1 and start over")
    # another trainer's run in the folder: named by its trainer
    line = train_py_error(capsys, "--root", data, "--output-dir", run, "--trainer", "MaPLe", "--dataset-config-file", DEMO,
                   "--config-file", os.path.join(ROOT, "configs", "trainers", "MaPLe", "tiny.yaml"), *BASE_RUN_OPTS)
    assert "TRAINER.NAME 'CoOp' -> 'MaPLe'" in line
    assert tree_fingerprint(run) == before


def test_same_config_resumes_and_keeps_its_config(run_copy, capsys):
    data, run = run_copy
    config = open(os.path.join(run, "config.yaml")).read()
    trainer = train_py(*coop_argv(data, "TRAIN.PRINT_FREQ", "3", output_dir=run))  # printing decides nothing
    assert "Found checkpoint at" in capsys.readouterr().out and trainer.start_epoch == 1
    assert open(os.path.join(run, "config.yaml")).read() == config


def test_force_moves_the_old_run_aside(run_copy, capsys):
    data, run = run_copy
    before = tree_fingerprint(run)
    train_py(*coop_argv(data, "OPTIM.LR", "0.001", "TEST.NO_TEST", "True", flags=["--force"], output_dir=run))
    assert f"moved the run in {run} aside to {run}.old-1" in capsys.readouterr().out
    assert tree_fingerprint(run + ".old-1") == before
    assert "LR: 0.001" in open(os.path.join(run, "config.yaml")).read()
    assert load_checkpoint(os.path.join(run, "prompt_learner", "model.pth.tar-1"))["epoch"] == 1


def test_checkpoints_without_a_config_are_refused(run_copy, capsys):
    data, run = run_copy
    os.remove(os.path.join(run, "config.yaml"))
    line = train_py_error(capsys, *coop_argv(data, output_dir=run))
    assert re.fullmatch(rf'train\.py: error: the output folder "{re.escape(run)}" holds checkpoints '
                        rf"\({re.escape(run)}/prompt_learner/model\.pth\.tar-1, \.\.\.\) but no config\.yaml.*"
                        r"use another --output-dir, or add --force .*", line)


def test_default_output_folder_is_checked_like_any_other(finished, tmp_path, monkeypatch, capsys):
    data, run = finished
    shutil.copytree(run, tmp_path / "output")
    monkeypatch.chdir(tmp_path)
    line = train_py_error(capsys, *coop_argv(data, flags=["--seed", "2"]))
    assert line.startswith('train.py: error: the default output folder (no --output-dir given) "./output" holds '
                           "another run: its config.yaml differs in SEED 1 -> 2;")


def test_model_dir_checkpoint_file_is_the_file_loaded(run_copy, tmp_path, capsys):
    data, run = run_copy
    checkpoint = load_checkpoint(os.path.join(run, "prompt_learner", "model.pth.tar-1"))
    checkpoint.pop("content_sha256")
    checkpoint["state_dict"]["ctx"] = torch.zeros_like(checkpoint["state_dict"]["ctx"])
    named = os.path.join(run, "prompt_learner", "zeros.pth")
    torch.save(checkpoint, named)
    trainer = train_py(*coop_argv(data, flags=["--eval-only", "--model-dir", named], output_dir=str(tmp_path / "eval")))
    assert f'from "{named}"' in capsys.readouterr().out
    assert torch.count_nonzero(trainer.model.prompt_learner.ctx) == 0
    classifier = api.load_prompted_clip(named, ["cat", "dog"], opts=["DATASET.ROOT", data])
    assert classifier.checkpoint == named
    assert torch.count_nonzero(classifier.trainer.model.prompt_learner.ctx) == 0
    line = train_py_error(capsys, *coop_argv(data, flags=["--eval-only", "--model-dir", named, "--load-epoch", "1"],
                                      output_dir=str(tmp_path / "eval2")))
    assert line == (f"train.py: error: --model-dir {named} names one checkpoint file, which is the one evaluated; "
                    "drop --load-epoch (or give the run folder with --load-epoch)")


def test_protocol_script_skips_only_its_own_finished_run(finished, tmp_path):
    """base2new_train.sh counts a finished folder as its result only with the same config (what the sweep asks too)."""
    data, run = finished
    out = tmp_path / "output"
    shutil.copytree(run, out / "base2new" / "train_base" / "demo" / "shots_2" / "CoOp" / "tiny" / "seed1")
    env = dict(os.environ, TRAINER="CoOp", CFG="tiny", SHOTS="2", DATA=data, OUTPUT_ROOT=str(out),
               PYTHON=sys.executable)

    def script(*opts):
        return subprocess.run(["bash", os.path.join(ROOT, "scripts", "base2new_train.sh"), "demo", "1", *opts],
                              env=env, capture_output=True, text=True, timeout=300)

    same = script("OPTIM.MAX_EPOCH", "1")
    assert same.returncode == 0, same.stderr
    assert "finished, skipping" in same.stdout and "base accuracy: " in same.stdout
    other = script("OPTIM.MAX_EPOCH", "2")
    assert other.returncode == 2
    assert re.fullmatch(r'train\.py: error: the output folder ".*/seed1" holds another run: its config\.yaml differs '
                        r"in OPTIM\.MAX_EPOCH 1 -> 2; .*FORCE=1.*\n", other.stderr)


def test_model_dir_of_another_trainer_is_named(finished, tmp_path, capsys):
    data, run = finished
    line = train_py_error(capsys, "--root", data, "--output-dir", str(tmp_path / "eval"), "--trainer", "MaPLe",
                   "--dataset-config-file", DEMO, "--config-file",
                   os.path.join(ROOT, "configs", "trainers", "MaPLe", "tiny.yaml"), "--eval-only", "--model-dir", run)
    assert line == (f"train.py: error: --model-dir {run} holds a model of a CoOp run (its config.yaml), but this "
                    "command builds MaPLe; give --trainer CoOp and that run's --config-file")
    assert not (tmp_path / "eval").exists()


def test_identity_ignores_keys_added_at_their_default_and_other_methods_nodes():
    identity = RunIdentity(defaults={"TRAINER.NEW.W": 8.0, "OPTIM.LR": 0.002}, other_nodes=("NEW", "MAPLE"))
    old = {"OPTIM.LR": 0.1, "TRAINER.MAPLE.N_CTX": 2, "TRAINER.COOP.N_CTX": 4}
    same = {**old, "TRAINER.NEW.W": 8.0, "TRAINER.MAPLE.N_CTX": 5}  # a new method's keys; another method's change
    assert differing_keys(old, same, identity) == []
    assert differing_keys(old, {**old, "TRAINER.COOP.N_CTX": 8}, identity) == [("TRAINER.COOP.N_CTX", 4, 8)]
    # absent on one side counts when the other side is not at the default, or the key has none
    own = RunIdentity(defaults={"TRAINER.NEW.W": 8.0})
    assert differing_keys(old, {**old, "TRAINER.NEW.W": 3.0}, own) == [("TRAINER.NEW.W", "<absent>", 3.0)]
    assert differing_keys({**old, "GONE": 1}, old, own) == [("GONE", 1, "<absent>")]
    assert differing_keys(old, {**old, "TRAINER.NEW.W": 8.0}, own) == []


def test_a_folder_made_before_a_method_was_added_is_still_recognised(run_copy, capsys):
    """An older version wrote a config.yaml without the keys added since (here: the linear probe's node and a
    speed switch); another method's node may differ too. The run still resumes; a real change is refused."""
    data, run = run_copy
    path = os.path.join(run, "config.yaml")
    config = yaml.safe_load(open(path))
    del config["TRAINER"]["LINEAR_PROBE"]
    del config["TRAINER"]["SPEEDUPS"]["COMPILE"]
    config["TRAINER"]["MAPLE"]["N_CTX"] = 5
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    before = tree_fingerprint(run)
    line = train_py_error(capsys, *coop_argv(data, "TRAINER.COOP.N_CTX", "8", output_dir=run))
    assert "its config.yaml differs in TRAINER.COOP.N_CTX 4 -> 8;" in line
    line = train_py_error(capsys, *coop_argv(data, "TRAINER.SPEEDUPS.COMPILE", "True", output_dir=run))
    assert "its config.yaml differs in TRAINER.SPEEDUPS.COMPILE '<absent>' -> True;" in line
    assert tree_fingerprint(run) == before
    trainer = train_py(*coop_argv(data, output_dir=run))
    assert "Found checkpoint at" in capsys.readouterr().out and trainer.start_epoch == 1
