"""Reading results out of Dassl-format run logs (PROTOCOL.md §5.4 and §6).

A run directory holds ``log.txt`` and, for every re-run in the same directory, ``log.txt-<timestamp>``.
A result is the last ``* <keyword>: <number>%`` line after an end signal: ``Finish training`` (or the
older ``Finished training``) for training logs, ``=> result`` for evaluation-only logs.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Optional, Sequence

LOG_NAME = "log.txt"
# Dassl >= 0.6.1 prints the first, the released MaPLe logs the second; accepting both fixes PROTOCOL §8 item 1.
TRAIN_END_SIGNALS = ("Finish training", "Finished training")
TEST_END_SIGNALS = ("=> result",)


@dataclass(frozen=True)
class RunResult:
    """The metric of one run, and the log file it was read from."""

    log_path: str
    value: float


def metric_pattern(keyword: str) -> re.Pattern:
    """The official metric regex: ``* <keyword>: <number>%`` with number characters ``[.\\deE+-]``."""
    return re.compile(r"\* " + re.escape(keyword) + r": ([.\deE+-]+)%")


def read_log(path: str, keyword: str = "accuracy", test_log: bool = False) -> Optional[float]:
    """The last metric value after the first end signal in ``path``, or None when there is none."""
    end_signals = TEST_END_SIGNALS if test_log else TRAIN_END_SIGNALS
    pattern = metric_pattern(keyword)
    started = False
    value = None
    with open(path, encoding="utf-8", errors="replace") as handle:
        for raw in handle:
            line = raw.strip()
            if line in end_signals:
                started = True
            if not started:
                continue
            match = pattern.search(line)
            if match is None:
                continue
            try:
                value = float(match.group(1))
            except ValueError:
                # The character class also admits strings such as "1e-"; they are not results.
                continue
    return value


def log_files(run_dir: str) -> list[str]:
    """The run's logs, newest first: ``log.txt-<YYYY-MM-DD-HH-MM-SS>`` by time stamp, then ``log.txt``."""
    if not os.path.isdir(run_dir):
        return []
    stamped = sorted(
        (name for name in os.listdir(run_dir) if name.startswith(LOG_NAME + "-")),
        reverse=True,
    )
    names = stamped + ([LOG_NAME] if os.path.isfile(os.path.join(run_dir, LOG_NAME)) else [])
    return [os.path.join(run_dir, name) for name in names if os.path.isfile(os.path.join(run_dir, name))]


def newest_result(run_dir: str, keyword: str = "accuracy", test_log: bool = False) -> Optional[RunResult]:
    """The result of the newest log in ``run_dir`` that has one (PROTOCOL §8 item 8: re-runs win)."""
    for path in log_files(run_dir):
        value = read_log(path, keyword, test_log)
        if value is not None:
            return RunResult(path, value)
    return None


def visible_subdirs(directory: str) -> list[str]:
    """Sorted names of the non-hidden sub-directories of ``directory``."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Not a directory: {directory}")
    return sorted(
        name for name in os.listdir(directory)
        if not name.startswith(".") and os.path.isdir(os.path.join(directory, name))
    )


def collect_runs(directory: str, keyword: str = "accuracy", test_log: bool = False) -> list[RunResult]:
    """One result per run sub-directory (e.g. ``seed1``, ``seed2``) of ``directory``.

    Runs whose logs hold no result yet are left out; a sub-directory without any log is an error, as
    in the official parser, because it is not a run directory at all.
    """
    results = []
    for name in visible_subdirs(directory):
        run_dir = os.path.join(directory, name)
        if not log_files(run_dir):
            raise FileNotFoundError(f"No {LOG_NAME} in {run_dir}: is {directory} an experiment folder of seed runs?")
        result = newest_result(run_dir, keyword, test_log)
        if result is not None:
            results.append(result)
    return results


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def spread(values: Sequence[float], ci95: bool = False) -> float:
    """Population standard deviation (``np.std``), or the 95% confidence half-width 1.96·std/sqrt(n)."""
    centre = mean(values)
    std = math.sqrt(sum((v - centre) ** 2 for v in values) / len(values))
    return 1.96 * std / math.sqrt(len(values)) if ci95 else std
