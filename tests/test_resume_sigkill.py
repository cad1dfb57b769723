"""Resume after a real SIGKILL: a demo MaPLe run (fp32, CPU, NUM_WORKERS 0) killed while writing a checkpoint,
in the middle of an epoch and during the final evaluation, each time re-run with the same command, ends with
the same prompt parameters and the same printed test result, bit for bit, as a run that was never interrupted."""
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_FOLDER = "MultiModalPromptLearner"
MAX_EPOCH = 3


def _command(data_root: str, output_dir: str):
    return [
        sys.executable, os.path.join(ROOT, "train.py"),
        "--root", data_root, "--output-dir", output_dir, "--seed", "1", "--trainer", "MaPLe",
        "--dataset-config-file", os.path.join(ROOT, "configs", "datasets", "demo.yaml"),
        "--config-file", os.path.join(ROOT, "configs", "trainers", "MaPLe", "tiny.yaml"),
        "DATASET.NUM_SHOTS", "8", "DATASET.SUBSAMPLE_CLASSES", "base",
        "OPTIM.MAX_EPOCH", str(MAX_EPOCH), "TRAIN.PRINT_FREQ", "1",
        # one image per batch (80 per epoch, 500 to evaluate): the kills below land while many batches are
        # still to come, so the child cannot reach the next checkpoint / the end of the evaluation first
        # (if it did, the "Previous epoch" assertions of the next re-run would fail, not pass silently)
        "DATALOADER.TRAIN_X.BATCH_SIZE", "1", "DATALOADER.TEST.BATCH_SIZE", "1",
    ]


def _env(**extra):
    # one intra-op thread: the same float reduction order in every run, and no OpenMP spin-waiting when the
    # test machine's cores are busy (which slows tiny steps down a hundredfold)
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=ROOT, OMP_NUM_THREADS="1", **extra)


def _run(data_root, output_dir, kill_when=None, **env):
    """Run train.py; with `kill_when`, SIGKILL it as soon as a stdout line contains that text. Returns
    (return code, stdout)."""
    with open(os.path.join(output_dir + ".stderr"), "w") as stderr:
        proc = subprocess.Popen(_command(data_root, output_dir), cwd=ROOT, env=_env(**env), text=True,
                                stdout=subprocess.PIPE, stderr=stderr)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if kill_when is not None and kill_when in line:
                proc.send_signal(signal.SIGKILL)
                break
        proc.stdout.close()
        return proc.wait(timeout=120), "".join(lines)


def _result(stdout):
    return re.findall(r"^\* (?:total|correct|accuracy|macro_f1): .*$", stdout, flags=re.M)


def _prompts(output_dir):
    state = torch.load(os.path.join(output_dir, MODEL_FOLDER, f"model.pth.tar-{MAX_EPOCH}"), weights_only=True)
    return state["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    data_root, output_dir = str(base / "data"), str(base / "uninterrupted")
    code, stdout = _run(data_root, output_dir)
    assert code == 0, stdout[-2000:]
    return data_root, _prompts(output_dir), _result(stdout)


def test_sigkill_at_three_points_then_rerun_is_bit_identical(uninterrupted, tmp_path):
    data_root, reference_prompts, reference_result = uninterrupted
    assert len(reference_result) == 4
    out = str(tmp_path / "run")
    folder = os.path.join(out, MODEL_FOLDER)

    # 1. killed between writing model.pth.tar-2 to its temporary file and renaming it
    code, stdout = _run(data_root, out, DASSL_KILL_BEFORE_RENAME="model.pth.tar-2")
    assert code == -signal.SIGKILL
    assert "Checkpoint saved to" in stdout and "model.pth.tar-2" not in stdout
    names = os.listdir(folder)
    assert "model.pth.tar-1" in names and "model.pth.tar-2" not in names
    assert any(n.startswith(".model.pth.tar-2.") for n in names)  # the complete but never renamed temp file
    assert open(os.path.join(folder, "checkpoint")).read() == "model.pth.tar-1\n"

    # 2. re-run: resumes after epoch 1 and is killed in the middle of epoch 3
    code, stdout = _run(data_root, out, kill_when=f"epoch [{MAX_EPOCH}/{MAX_EPOCH}] batch [1/80]")
    assert code == -signal.SIGKILL
    assert "Previous epoch: 1" in stdout and "epoch [1/" not in stdout
    assert not any(n.endswith(".tmp") for n in os.listdir(folder))  # the stale temp file was cleared

    # 3. re-run: resumes after epoch 2, saves epoch 3 and is killed during the final evaluation
    code, stdout = _run(data_root, out, kill_when="Evaluate on the *test* set")
    assert code == -signal.SIGKILL
    assert "Previous epoch: 2" in stdout and "Finish training" in stdout

    # 4. re-run: nothing left to train; evaluates the last checkpoint
    code, stdout = _run(data_root, out)
    assert code == 0, stdout[-2000:]
    assert "Previous epoch: 3" in stdout and "epoch [" not in stdout
    assert _result(stdout) == reference_result
    prompts = _prompts(out)
    assert prompts.keys() == reference_prompts.keys()
    for key, value in reference_prompts.items():
        assert torch.equal(prompts[key], value), key
    # the intermediate resume points are pruned: the folder looks like an official run's
    assert sorted(os.listdir(folder)) == ["checkpoint", f"model.pth.tar-{MAX_EPOCH}"]
