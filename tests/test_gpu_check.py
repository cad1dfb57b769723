"""benchmarks/gpu_check.sh without a GPU (it refuses with one line) and the table it prints (gpu_table.py)."""
import json
import os
import subprocess

import pytest
import torch

from benchmarks.gpu_table import format_table
from trainers_testutils import REPO

GIB = 1024 ** 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would run in full")
def test_gpu_check_without_a_gpu_says_so(tmp_path):
    proc = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "gpu_check.sh")], cwd=str(tmp_path),
                          env=dict(os.environ, GPU_CHECK_DIR=str(tmp_path / "results")),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("gpu_check.sh: error: no CUDA GPU is visible to torch "
                                   "(torch.cuda.is_available() is False)")


def _run(phase, classes, plain, value, allocated, reserved):
    key = "step_s" if phase == "train" else "images_per_s"
    return {"spec": {"phase": phase, "classes": classes, "plain": plain}, key: value,
            "peak_cuda_allocated_bytes": allocated * GIB, "peak_cuda_reserved_bytes": reserved * GIB}


def test_gpu_table_has_times_speedups_and_phase_memory(tmp_path):
    report = {"trainer": "MaPLe", "machine": {"device": "cuda", "gpu": "NVIDIA H200", "torch": "2.14.1"},
              "runs": [_run("train", 500, False, 0.5, 2.0, 2.5), _run("train", 500, True, 2.0, 8.0, 9.0),
                       _run("eval", 1000, False, 900.0, 1.0, 1.5), _run("eval", 1000, True, 300.0, 1.25, 2.0)]}
    (tmp_path / "MaPLe.json").write_text(json.dumps(report))
    (tmp_path / "pytest.txt").write_text("....\n== 45 passed, 2 skipped in 201.3s ==\n")
    table = format_table(str(tmp_path / "pytest.txt"), [str(tmp_path / "MaPLe.json"), str(tmp_path / "CoOp.json")])
    lines = table.splitlines()
    assert lines[0] == "GPU check (NVIDIA H200, torch 2.14.1)"
    assert lines[1] == "CUDA tests: 45 passed, 2 skipped in 201.3s"
    cells = [[cell.strip() for cell in line.split("|")] for line in lines[3:]]
    assert cells[0] == ["MaPLe", "train", "500", "s/step", "0.500", "2.000", "4.00x", "2.00 / 2.50", "8.00 / 9.00"]
    assert cells[1] == ["MaPLe", "eval", "1000", "images/s", "900.000", "300.000", "3.00x", "1.00 / 1.50",
                        "1.25 / 2.00"]
    assert cells[2][:2] == ["CoOp", "not measured (failed or out of time)"]
