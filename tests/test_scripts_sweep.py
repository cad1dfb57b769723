"""The real scripts end to end on the demo dataset: a base-to-novel sweep over two CPU slots."""
import csv
import glob
import os
import subprocess
import sys

from scripts.logs import newest_result
from scripts.tables import harmonic_mean
from scripts_testutils import fake_python, recorded_calls

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSED_THROUGH = ("TRAINER", "CFG", "LOADEP", "SUB", "SOURCE", "FORCE", "CHECK_FINISHED", "MODEL_DIR",
                  "RESULTS_DIR", "SWEEP_LOGS", "DRY_RUN")


def sweep(tmp_path, trainers, **settings):
    env = {k: v for k, v in os.environ.items() if k not in PASSED_THROUGH}
    env.update({
        "TRAINERS": trainers, "DATASETS": "demo", "SEEDS": "1,2", "STEPS": "base2new", "GPUS": "cpu,cpu",
        "DATA": "data", "OUTPUT_ROOT": "out",  # relative to the caller's directory, not the repository
        # Keep each demo run to seconds; the test step must then load epoch 1 and use the 4-shot folders.
        "EXTRA_OPTS": "OPTIM.MAX_EPOCH 1", "SHOTS": "4",
        **settings,
    })
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", "sweep.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True)


def test_base2new_sweep_failure_isolation_table_and_rerun(tmp_path):
    # A third trainer entry names a config that does not exist: its jobs fail, the others must finish.
    first = sweep(tmp_path, "MaPLe,CoOp,IVLP:no_such_config")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "12 jobs: 8 run and finished, 0 already finished (skipped), 2 failed, 2 blocked" in first.stdout
    failed = [line for line in first.stdout.splitlines() if line.strip().startswith("FAILED")]
    assert len(failed) == 2 and all("IVLP:no_such_config" in line for line in failed)
    failed_log = os.path.join(str(tmp_path), "out", "sweep_logs", "base2new_train", "IVLP_no_such_config", "demo",
                              "seed1.log")
    assert "CFG may be one of" in open(failed_log, encoding="utf-8").read()
    assert "BLOCKED  base2new_test IVLP:no_such_config demo seed2" in first.stdout

    # The aggregator's table: both trainers, each cell the mean over the two seeds, HM of those means.
    out = os.path.join(str(tmp_path), "out")
    with open(os.path.join(out, "results", "base2new.csv"), newline="", encoding="utf-8") as handle:
        rows = {(row["dataset"], row["trainer"]): row for row in csv.DictReader(handle)}
    for trainer in ("MaPLe", "CoOp"):
        common = os.path.join("demo", "shots_4", trainer, "demo")
        base = [newest_result(os.path.join(out, "base2new", "train_base", common, f"seed{s}")).value for s in (1, 2)]
        novel = [newest_result(os.path.join(out, "base2new", "test_new", common, f"seed{s}"), test_log=True).value
                 for s in (1, 2)]
        row = rows[("demo", trainer)]
        assert (row["base_seeds"], row["novel_seeds"]) == ("2", "2")
        assert abs(float(row["base"]) - sum(base) / 2) < 1e-3
        assert abs(float(row["novel"]) - sum(novel) / 2) < 1e-3
        assert abs(float(row["hm"]) - harmonic_mean(sum(base) / 2, sum(novel) / 2)) < 1e-3
        # The test loaded the epoch that training saved (MAX_EPOCH overridden to 1).
        assert glob.glob(os.path.join(out, "base2new", "train_base", common, "seed1", "*", "model.pth.tar-1"))
    assert "| demo |" in open(os.path.join(out, "results", "base2new.md"), encoding="utf-8").read()

    logs_before = sorted(glob.glob(os.path.join(out, "base2new", "**", "log.txt*"), recursive=True))
    second = sweep(tmp_path, "MaPLe,CoOp")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Sweep: 8 jobs, 8 already finished, 0 to run" in second.stdout
    assert "[start]" not in second.stdout
    assert sorted(glob.glob(os.path.join(out, "base2new", "**", "log.txt*"), recursive=True)) == logs_before


def test_zero_shot_clip_is_swept_through_base2new_into_the_first_row(tmp_path):
    # The stand-in train.py keeps this to seconds; tests/test_scripts_zeroshot_base2new.py runs the real one.
    fake = fake_python(tmp_path / "bin", sys.executable)
    first = sweep(tmp_path, "ZeroshotCLIP,CoOp", SEEDS="1", GPUS="cpu", **fake)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "4 jobs: 4 run and finished, 0 already finished (skipped), 0 failed, 0 blocked" in first.stdout
    zero_shot_calls = [call for call in recorded_calls(fake) if "ZeroshotCLIP" in call]
    assert len(zero_shot_calls) == 2 and all("--eval-only" in call for call in zero_shot_calls)

    out = os.path.join(str(tmp_path), "out")
    with open(os.path.join(out, "results", "base2new.csv"), newline="", encoding="utf-8") as handle:
        first_row = next(csv.DictReader(handle))
    # Both halves evaluated (the stand-in's evaluation result is 55.5%), zero-shot CLIP before CoOp.
    assert (first_row["dataset"], first_row["trainer"], first_row["base"], first_row["novel"]) == \
        ("demo", "ZeroshotCLIP", "55.5000", "55.5000")
    header = open(os.path.join(out, "results", "base2new.md"), encoding="utf-8").readline()
    assert header.startswith("| Dataset | ZeroshotCLIP Base | ZeroshotCLIP Novel | ZeroshotCLIP HM | CoOp Base")

    # A re-run finds every job finished (DRY_RUN=1 stops after that check, which a real re-run makes too).
    second = sweep(tmp_path, "ZeroshotCLIP,CoOp", SEEDS="1", GPUS="cpu", DRY_RUN="1", **fake)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Sweep: 4 jobs, 4 already finished, 0 to run" in second.stdout
    for step in ("base2new_train", "base2new_test"):
        assert f"finished {step} ZeroshotCLIP demo seed1" in second.stdout
    assert len(recorded_calls(fake)) == 4


def test_zero_shot_jobs_ignore_a_cfg_and_sub_meant_for_the_trained_methods():
    from scripts.sweep import Job

    base = {"CFG": "vit_b16_c2_ep5_batch4_2ctx", "SUB": "new", "DATA": "data"}
    zero_shot = Job("zeroshot", "ZeroshotCLIP", None, "demo", "1").environment(base, "cpu")
    assert "CFG" not in zero_shot and "SUB" not in zero_shot and zero_shot["DATA"] == "data"
    # In the base-to-novel steps zero-shot CLIP keeps its own config but evaluates the SUB half it is given.
    novel = Job("base2new_test", "ZeroshotCLIP", None, "demo", "1").environment(base, "cpu")
    assert "CFG" not in novel and novel["SUB"] == "new"
    chosen = Job("base2new_train", "ZeroshotCLIP", "vit_b16_ep50", "demo", "1").environment(base, "cpu")
    assert chosen["CFG"] == "vit_b16_ep50"
    trained = Job("base2new_train", "MaPLe", None, "demo", "1").environment(base, "cpu")
    assert trained["CFG"] == "vit_b16_c2_ep5_batch4_2ctx" and trained["CUDA_VISIBLE_DEVICES"] == ""


def test_force_sweep_reruns_finished_jobs_and_reports_them_finished(tmp_path):
    """FORCE=1 runs every job again (train.py --force) and the sweep counts each as run and finished."""
    fake = fake_python(tmp_path / "bin", sys.executable)
    first = sweep(tmp_path, "CoOp", SEEDS="1", GPUS="cpu", **fake)
    assert first.returncode == 0, first.stdout + first.stderr
    again = sweep(tmp_path, "CoOp", SEEDS="1", GPUS="cpu", FORCE="1", **fake)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Sweep: 2 jobs, 0 already finished, 2 to run" in again.stdout
    assert "2 jobs: 2 run and finished, 0 already finished (skipped), 0 failed, 0 blocked" in again.stdout
    assert "FAILED" not in again.stdout and "BLOCKED" not in again.stdout
    calls = recorded_calls(fake)
    assert len(calls) == 4 and ["--force" in call for call in calls] == [False, False, True, True]
    log = os.path.join(str(tmp_path), "out", "sweep_logs", "base2new_train", "CoOp", "demo", "seed1.log")
    assert "FORCE=1: running" in open(log, encoding="utf-8").read()
