"""The one table of benchmarks/gpu_check.sh: the CUDA tests' outcome, then per trainer and phase the time of
ours and of the plain path and the peak CUDA memory of the phase (allocated to tensors / reserved by the
caching allocator, reset after the model is built; benchmarks/measure.py).

  python3 benchmarks/gpu_table.py PYTEST_OUTPUT.txt BENCH.json [BENCH.json ...]
"""
from __future__ import annotations

import json
import os
import re
import statistics
import sys
from typing import Optional

GIB = 1024 ** 3


def pytest_summary(path: str) -> str:
    """The last "N passed, ..." line of a pytest run, or why there is none."""
    if not os.path.isfile(path):
        return "not run"
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip().strip("=").strip() for line in f if re.search(r"\b(passed|failed|error|skipped)\b", line)]
    return lines[-1] if lines else "no summary (stopped early: see the output file)"


def _memory(runs: list[dict]) -> str:
    allocated = [r["peak_cuda_allocated_bytes"] for r in runs if "peak_cuda_allocated_bytes" in r]
    reserved = [r["peak_cuda_reserved_bytes"] for r in runs if "peak_cuda_reserved_bytes" in r]
    if not allocated:
        return "-"
    return f"{max(allocated) / GIB:.2f} / {max(reserved) / GIB:.2f}" if reserved else f"{max(allocated) / GIB:.2f} / -"


def _value(runs: list[dict], phase: str) -> Optional[float]:
    if not runs:
        return None
    return statistics.median(r["step_s" if phase == "train" else "images_per_s"] for r in runs)


def report_rows(report: dict) -> list[list[str]]:
    """One row per (phase, classes) of a bench_trainers.py JSON report."""
    rows = []
    keys = dict.fromkeys((r["spec"]["phase"], r["spec"]["classes"]) for r in report["runs"])
    for phase, classes in keys:
        runs = {plain: [r for r in report["runs"] if (r["spec"]["phase"], r["spec"]["classes"], r["spec"]["plain"])
                        == (phase, classes, plain)] for plain in (False, True)}
        ours, plain = _value(runs[False], phase), _value(runs[True], phase)
        speedup = None
        if ours and plain:
            speedup = plain / ours if phase == "train" else ours / plain
        rows.append([report["trainer"], phase, str(classes), "s/step" if phase == "train" else "images/s",
                     "-" if ours is None else f"{ours:.3f}", "-" if plain is None else f"{plain:.3f}",
                     "-" if speedup is None else f"{speedup:.2f}x", _memory(runs[False]), _memory(runs[True])])
    return rows


def format_table(pytest_file: str, report_files: list[str]) -> str:
    header = ["trainer", "phase", "classes", "unit", "ours", "plain", "speed-up",
              "ours peak CUDA GiB (alloc / reserved)", "plain peak CUDA GiB (alloc / reserved)"]
    lines, machine = [header], None
    for path in report_files:
        name = os.path.splitext(os.path.basename(path))[0]
        if not os.path.isfile(path):
            lines.append([name, "not measured (failed or out of time)"] + [""] * (len(header) - 2))
            continue
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        machine = machine or report["machine"]
        lines.extend(report_rows(report))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    table = "\n".join(" | ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)
    where = "no benchmark result"
    if machine:
        where = f"{machine.get('gpu', machine['device'])}, torch {machine['torch']}"
    return f"GPU check ({where})\nCUDA tests: {pytest_summary(pytest_file)}\n{table}"


def main(argv: list[str]) -> int:
    if len(argv) < 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    print(format_table(argv[0], argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
