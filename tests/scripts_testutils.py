"""Hand-written Dassl-format logs for the parser and sweep tests (PROTOCOL.md §6)."""
from __future__ import annotations

import os


def training_log(accuracy: float | None, end_signal: str = "Finish training") -> str:
    """A training log: epoch lines, an end signal and the final test block (or an interrupted run when None)."""
    lines = [
        "** Config **",
        "TEST:",
        "  EVALUATOR: Classification",
        "Loading trainer: MaPLe",
        "epoch [1/2] batch [20/76] time 0.1 (0.1) data 0.0 (0.0) loss 1.2 (1.3) lr 1.0000e-05 eta 0:00:10",
        # A validation-style block before the end signal must not count as the result.
        "=> result",
        "* accuracy: 11.1%",
    ]
    if accuracy is not None:
        lines += [
            "Checkpoint saved to out/MultiModalPromptLearner/model.pth.tar-2",
            end_signal,
            "Deploy the last-epoch model",
            "Evaluate on the *test* set",
            "=> result",
            "* total: 1,000",
            "* correct: 900",
            f"* accuracy: {accuracy}%",
            f"* error: {100 - accuracy:.1f}%",
            "* macro_f1: 88.0%",
            "Elapsed: 0:01:02",
        ]
    return "\n".join(lines) + "\n"


def eval_log(accuracy: float) -> str:
    """An evaluation-only log (``--eval-only``)."""
    return "\n".join([
        "Loading trainer: MaPLe",
        'Loading weights to MultiModalPromptLearner from "out/model.pth.tar-5" (epoch = 5)',
        "Evaluate on the *test* set",
        "=> result",
        "* total: 500",
        "* correct: 400",
        f"* accuracy: {accuracy}%",
        f"* error: {100 - accuracy:.1f}%",
        "* macro_f1: 77.7%",
    ]) + "\n"


def write(path: str, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


# A stand-in for `python3 train.py`: records its arguments and writes a finished log into --output-dir,
# so the scripts' command building, paths, skipping and resuming can be tested in milliseconds.
FAKE_TRAIN = r'''
import json, os, sys
args = sys.argv[2:]  # after "train.py"
if "--check-run-folder" in args:
    sys.exit(0)  # the scripts' identity check of a finished folder: the fake writes no config.yaml, so any is fine
with open(os.environ["FAKE_RECORD"], "a") as record:
    record.write(json.dumps(args) + "\n")
out = args[args.index("--output-dir") + 1]
os.makedirs(out, exist_ok=True)
log = os.path.join(out, "log.txt")
if os.path.exists(log):
    log += "-2030-01-01-00-00-00"
with open(log, "w") as handle:
    if "--eval-only" in args:
        handle.write("=> result\n* accuracy: 55.5%\n")
    else:
        handle.write("Finish training\n=> result\n* accuracy: 77.7%\n")
'''


def fake_python(tmp_path, real_python: str) -> dict:
    """Environment variables that make the scripts call the fake train.py (and the real Python otherwise)."""
    script = os.path.join(str(tmp_path), "fake_train.py")
    write(script, FAKE_TRAIN)
    wrapper = os.path.join(str(tmp_path), "fakepy")
    write(wrapper, f'#!/bin/bash\nif [ "$1" = train.py ]; then exec "{real_python}" "{script}" "$@"; fi\n'
                   f'exec "{real_python}" "$@"\n')
    os.chmod(wrapper, 0o755)
    return {"PYTHON": wrapper, "FAKE_RECORD": os.path.join(str(tmp_path), "calls.jsonl")}


def recorded_calls(env: dict) -> list:
    import json
    if not os.path.exists(env["FAKE_RECORD"]):
        return []
    with open(env["FAKE_RECORD"], encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]
