"""The protocol scripts' arguments, paths, commands, skipping and resuming, with a stand-in train.py."""
import os
import subprocess
import sys

import pytest

from scripts import sweep
from scripts.config_value import lookup
from scripts_testutils import fake_python, recorded_calls, training_log, write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_MAX_EPOCH = str(lookup(os.path.join(ROOT, "configs", "trainers", "MaPLe", "demo.yaml"), "OPTIM.MAX_EPOCH"))


def run(script, *args, env=None, cwd=None):
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("TRAINER", "CFG", "DATA", "SHOTS", "LOADEP", "EXTRA_OPTS", "OUTPUT_ROOT", "SUB",
                             "SOURCE", "FORCE", "CHECK_FINISHED", "MODEL_DIR", "PROTOCOL")}
    full_env.update(env or {})
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", script), *args], env=full_env, cwd=cwd,
                          capture_output=True, text=True)


@pytest.fixture
def fake(tmp_path):
    env = fake_python(tmp_path / "bin", sys.executable)
    env["OUTPUT_ROOT"] = "out"  # relative: must be taken from the caller's directory
    env["DATA"] = "data"
    return env


def option(call, flag):
    return call[call.index(flag) + 1]


def test_usage_lists_datasets_and_trainers():
    result = run("base2new_train.sh")
    assert result.returncode == 2
    assert "Usage: bash scripts/base2new_train.sh DATASET SEED" in result.stderr
    datasets_line = next(line for line in result.stderr.splitlines() if line.startswith("Datasets:"))
    trainers_line = next(line for line in result.stderr.splitlines() if line.startswith("Trainers:"))
    assert "demo" in datasets_line.split() and "MaPLe" in trainers_line.split()
    help_result = run("xd_test.sh", "--help")
    assert help_result.returncode == 0 and "SOURCE" in help_result.stdout


@pytest.mark.parametrize("args, env, message", [
    (("nosuchset", "1"), {}, "unknown dataset 'nosuchset'"),
    (("demo", "1"), {"TRAINER": "Nobody"}, "unknown trainer 'Nobody'"),
    (("demo", "x"), {}, "SEED must be a non-negative integer"),
    (("demo", "1"), {"CFG": "nope"}, "CFG may be one of:"),
    (("demo", "1", "OPTIM.MAX_EPOCH"), {}, "KEY VALUE pairs"),
])
def test_bad_arguments_are_named(args, env, message, tmp_path):
    result = run("base2new_train.sh", *args, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr


def test_base2new_train_then_test(fake, tmp_path):
    train = run("base2new_train.sh", "demo", "1", env=fake, cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    assert train.stdout.rstrip().endswith("base accuracy: 77.7%")
    test = run("base2new_test.sh", "demo", "1", env=fake, cwd=tmp_path)
    assert test.returncode == 0, test.stderr
    assert test.stdout.rstrip().endswith("novel accuracy: 55.5%")

    train_call, test_call = recorded_calls(fake)
    common = os.path.join("demo", "shots_16", "MaPLe", "demo", "seed1")
    train_dir = os.path.join(str(tmp_path), "out", "base2new", "train_base", common)
    assert option(train_call, "--output-dir") == train_dir
    assert option(train_call, "--root") == os.path.join(str(tmp_path), "data")
    assert option(train_call, "--config-file") == "configs/trainers/MaPLe/demo.yaml"
    assert train_call[-4:] == ["DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base"]
    assert option(test_call, "--output-dir") == os.path.join(str(tmp_path), "out", "base2new", "test_new", common)
    assert option(test_call, "--model-dir") == train_dir
    assert option(test_call, "--load-epoch") == DEMO_MAX_EPOCH  # read from the YAML
    assert "--eval-only" in test_call and test_call[-1] == "new"


def test_finished_runs_are_skipped_and_unfinished_resumed(fake, tmp_path):
    assert run("base2new_train.sh", "demo", "1", env=fake, cwd=tmp_path).returncode == 0
    again = run("base2new_train.sh", "demo", "1", env=fake, cwd=tmp_path)
    assert "finished, skipping" in again.stdout and again.stdout.rstrip().endswith("base accuracy: 77.7%")
    assert len(recorded_calls(fake)) == 1
    # An interrupted run (log without a result) is resumed in the same folder, as officially.
    seed2 = tmp_path / "out" / "base2new" / "train_base" / "demo" / "shots_16" / "MaPLe" / "demo" / "seed2"
    write(str(seed2 / "log.txt"), training_log(None))
    resumed = run("base2new_train.sh", "demo", "2", env=fake, cwd=tmp_path)
    assert "Resuming..." in resumed.stdout and resumed.returncode == 0
    assert len(recorded_calls(fake)) == 2
    check = run("base2new_train.sh", "demo", "3", env={**fake, "CHECK_FINISHED": "1"}, cwd=tmp_path)
    assert check.returncode == 1 and len(recorded_calls(fake)) == 2
    # The sweep's pre-check: seed 1 is finished, unless FORCE=1 asks for it to run again.
    assert run("base2new_train.sh", "demo", "1", env={**fake, "CHECK_FINISHED": "1"}, cwd=tmp_path).returncode == 0
    forced = run("base2new_train.sh", "demo", "1", env={**fake, "CHECK_FINISHED": "1", "FORCE": "1"}, cwd=tmp_path)
    assert forced.returncode == 1 and len(recorded_calls(fake)) == 2


def test_loadep_follows_overrides_and_missing_model_is_explained(fake, tmp_path):
    env = {**fake, "EXTRA_OPTS": "OPTIM.MAX_EPOCH 1"}
    assert run("base2new_train.sh", "demo", "1", env=env, cwd=tmp_path).returncode == 0
    assert run("base2new_test.sh", "demo", "1", env=env, cwd=tmp_path).returncode == 0
    test_call = recorded_calls(fake)[-1]
    assert option(test_call, "--load-epoch") == "1" and test_call[-2:] == ["OPTIM.MAX_EPOCH", "1"]
    missing = run("base2new_test.sh", "demo", "2", env=fake, cwd=tmp_path)
    assert missing.returncode == 1 and "run scripts/base2new_train.sh demo 2 first" in missing.stderr


def test_cross_dataset_with_coop_method_options(fake, tmp_path):
    env = {**fake, "TRAINER": "CoOp", "SOURCE": "demo", "CFG": "demo"}
    assert run("xd_train.sh", "demo", "1", env=env, cwd=tmp_path).returncode == 0
    result = run("xd_test.sh", "dtd", "1", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    train_call, test_call = recorded_calls(fake)
    method = os.path.join("demo_16shots", "nctx16_cscFalse_ctpend")
    assert option(train_call, "--output-dir") == os.path.join(str(tmp_path), "out", "demo", "CoOp", method, "seed1")
    assert option(test_call, "--output-dir") == os.path.join(str(tmp_path), "out", "evaluation", "CoOp", method,
                                                             "dtd", "seed1")
    assert option(test_call, "--load-epoch") == DEMO_MAX_EPOCH
    assert "DATASET.NUM_SHOTS" not in test_call  # targets are evaluated on all their test images
    assert test_call[-6:] == ["TRAINER.COOP.N_CTX", "16", "TRAINER.COOP.CSC", "False",
                              "TRAINER.COOP.CLASS_TOKEN_POSITION", "end"]


def test_fewshot_and_zeroshot_paths(fake, tmp_path):
    env = {**fake, "TRAINER": "CoOp", "SHOTS": "4", "NCTX": "8"}
    assert run("fewshot.sh", "dtd", "2", env=env, cwd=tmp_path).returncode == 0
    assert run("zeroshot.sh", "dtd", env=fake, cwd=tmp_path).returncode == 0
    zs_base = run("zeroshot.sh", "demo", env={**fake, "SUB": "base"}, cwd=tmp_path)
    assert zs_base.stdout.rstrip().endswith("base accuracy: 55.5%")
    fewshot_call, zeroshot_call, base_call = recorded_calls(fake)
    assert option(fewshot_call, "--output-dir") == os.path.join(
        str(tmp_path), "out", "dtd", "CoOp", "vit_b16_4shots", "nctx8_cscFalse_ctpend", "seed2")
    assert option(zeroshot_call, "--output-dir") == os.path.join(str(tmp_path), "out", "ZeroshotCLIP", "vit_b16", "dtd")
    assert option(zeroshot_call, "--config-file") == "configs/trainers/CoOp/vit_b16.yaml"
    assert "--seed" not in zeroshot_call and "--model-dir" not in zeroshot_call
    assert option(base_call, "--output-dir") == os.path.join(
        str(tmp_path), "out", "base2new", "test_base", "demo", "shots_16", "ZeroshotCLIP", "demo", "seed1")


def test_zero_shot_clip_in_base2new_evaluates_base_then_novel(fake, tmp_path):
    env = {**fake, "TRAINER": "ZeroshotCLIP"}
    train = run("base2new_train.sh", "demo", "1", "OPTIM.MAX_EPOCH", "1", env=env, cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    assert train.stdout.rstrip().endswith("base accuracy: 55.5%")
    test = run("base2new_test.sh", "demo", "1", "OPTIM.MAX_EPOCH", "1", env=env, cwd=tmp_path)
    assert test.returncode == 0, test.stderr
    assert test.stdout.rstrip().endswith("novel accuracy: 55.5%")

    # Nothing is trained or loaded: two evaluation-only runs, into the folders the table reads.
    base_call, novel_call = recorded_calls(fake)
    for call, split in [(base_call, "base"), (novel_call, "new")]:
        assert option(call, "--output-dir") == os.path.join(
            str(tmp_path), "out", "base2new", f"test_{split}", "demo", "shots_16", "ZeroshotCLIP", "demo", "seed1")
        assert option(call, "--config-file") == "configs/trainers/CoOp/demo.yaml"
        assert "--eval-only" in call and "--model-dir" not in call and "--load-epoch" not in call
        assert call[-6:] == ["DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", split, "OPTIM.MAX_EPOCH", "1"]
    assert not (tmp_path / "out" / "base2new" / "train_base").exists()

    # Finished halves are skipped, for the sweep's check too, and they are zeroshot.sh's SUB=base|new runs.
    again = run("base2new_train.sh", "demo", "1", env=env, cwd=tmp_path)
    assert "finished, skipping" in again.stdout and again.stdout.rstrip().endswith("base accuracy: 55.5%")
    assert run("base2new_test.sh", "demo", "1", env={**env, "CHECK_FINISHED": "1"}, cwd=tmp_path).returncode == 0
    assert "finished, skipping" in run("zeroshot.sh", "demo", "1", env={**fake, "SUB": "new"}, cwd=tmp_path).stdout
    assert len(recorded_calls(fake)) == 2


def test_reproduce_reads_the_released_layout(fake, tmp_path):
    os.makedirs(tmp_path / "weights" / "base" / "seed1" / "MultiModalPromptLearner")
    result = run("reproduce.sh", "demo", "1", "weights", env=fake, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "base accuracy: 55.5%" in result.stdout and result.stdout.rstrip().endswith("novel accuracy: 55.5%")
    base_call, new_call = recorded_calls(fake)
    for call, split in [(base_call, "base"), (new_call, "new")]:
        assert option(call, "--model-dir") == os.path.join(str(tmp_path), "weights", "base", "seed1")
        assert option(call, "--output-dir").endswith(os.path.join(f"test_{split}", "demo", "shots_16", "MaPLe", "demo",
                                                                  "seed1"))
        assert call[-1] == split
    missing = run("reproduce.sh", "demo", "1", "nowhere", env=fake, cwd=tmp_path)
    assert missing.returncode == 1 and "nowhere is not a folder" in missing.stderr


def test_sweep_plan_links_tests_to_their_training():
    env = {"TRAINERS": "MaPLe,IVLP:demo_language_only", "DATASETS": "demo,dtd", "SEEDS": "1 2",
           "STEPS": "xd,zeroshot", "SOURCE": "demo"}
    jobs = sweep.plan(env)
    trains = [job for job in jobs if job.step == "xd_train"]
    # One source training per trainer and seed, however many targets.
    assert sorted((j.trainer, j.config, j.dataset, j.seed) for j in trains) == [
        ("IVLP", "demo_language_only", "demo", "1"), ("IVLP", "demo_language_only", "demo", "2"),
        ("MaPLe", None, "demo", "1"), ("MaPLe", None, "demo", "2")]
    for job in jobs:
        if job.step == "xd_test":
            assert job.needs in trains and (job.needs.trainer, job.needs.seed) == (job.trainer, job.seed)
    assert sorted(j.dataset for j in jobs if j.step == "zeroshot") == ["demo", "dtd"]
    with pytest.raises(sweep.SweepError, match="unknown step 'train'"):
        sweep.plan({**env, "STEPS": "train"})
    with pytest.raises(sweep.SweepError, match="DATASETS: unknown 'mnist'"):
        sweep.plan({**env, "DATASETS": "mnist"})
