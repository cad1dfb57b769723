"""The official lpclip probe and LinearProbeCLIP's on the same feature files: chosen C and test accuracy per
shots and seed, side by side.

    python -m scripts.compare_lpclip --lpclip ~/CoOp/lpclip/linear_probe.py \\
        --feature-dir data/clip_feat/<tag> --dataset Demo

`--feature-dir` holds `<dataset>/{train,val,test}.npz` (the folder a LinearProbeCLIP run names in its log,
or lpclip's own `clip_feat/`). The official script (not part of this project) is run as its README says, in
a scratch folder (it writes `report/` where it runs, named after the feature folder), for shots 1, 2, 4, 8
and 16 and seeds 1..--runs; this project's probe makes the same draws (`TRAINER.LINEAR_PROBE.SAMPLING
lpclip`) and the same search. Exit status 0 when every C and every test accuracy agree.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from typing import Optional

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run as a file, not only as `python -m`
    sys.path.insert(0, REPO_ROOT)

from trainers.linear_probe import (LPCLIP_C_GRID, read_lpclip_features, sample_per_class, search_c,  # noqa: E402
                                   validation_shots)

LPCLIP_SHOTS = (1, 2, 4, 8, 16)  # linear_probe.py's own loop
DETAIL = re.compile(r"^(?P<dataset>.+), seed (?P<seed>\d+), (?P<shots>\d+) shot, weight (?P<c>\S+), "
                    r"test_acc (?P<acc>[\d.]+)$")


def run_official(script: str, feature_dir: str, dataset: str, runs: int, steps: int) -> dict:
    """{(shots, seed): (C, test accuracy)} of the last search round, from the official script's report."""
    with tempfile.TemporaryDirectory() as scratch:
        os.symlink(os.path.abspath(feature_dir), os.path.join(scratch, "clip_feat"))
        command = [sys.executable, os.path.abspath(script), "--dataset", dataset, "--feature_dir", "clip_feat",
                   "--num_step", str(steps), "--num_run", str(runs)]
        completed = subprocess.run(command, cwd=scratch, capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
        report = os.path.join(scratch, "report", f"clip_feat_s{steps}r{runs}_details.txt")
        results = {}
        with open(report, encoding="utf-8") as handle:
            for line in handle:
                match = DETAIL.match(line.strip())
                if match:  # one line per round: the last one of a (shots, seed) is its result
                    results[(int(match["shots"]), int(match["seed"]))] = (float(match["c"]), float(match["acc"]))
    return results


def run_ours(feature_dir: str, dataset: str, runs: int, steps: int, shots_list=LPCLIP_SHOTS) -> dict:
    """{(shots, seed): (C, test accuracy)} of this project's probe (lpclip sampling) on the same files."""
    split = {name: read_lpclip_features(os.path.join(feature_dir, dataset, f"{name}.npz"))
             for name in ("train", "val", "test")}
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = split["train"], split["val"], split["test"]
    results = {}
    for shots in shots_list:
        for seed in range(1, runs + 1):
            state = np.random.RandomState(seed)
            train = sample_per_class(train_y, shots, state, "train")
            val = sample_per_class(val_y, validation_shots(shots), state, "val")
            result = search_c((train_x[train], train_y[train]), (val_x[val], val_y[val]), LPCLIP_C_GRID, steps,
                              1000, log=lambda line: None)
            accuracy = 100.0 * float((result.classifier.predict(test_x) == test_y).sum()) / len(test_y)
            results[(shots, seed)] = (result.C, accuracy)
    return results


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lpclip", required=True, help="the official lpclip/linear_probe.py")
    parser.add_argument("--feature-dir", required=True, help="folder holding <dataset>/{train,val,test}.npz")
    parser.add_argument("--dataset", required=True, help="the dataset folder's name (DATASET.NAME, e.g. Demo)")
    parser.add_argument("--runs", type=int, default=3, help="seeds 1..runs (lpclip's --num_run; default 3)")
    parser.add_argument("--steps", type=int, default=8, help="search rounds (lpclip's --num_step; default 8)")
    args = parser.parse_args(argv)
    official = run_official(args.lpclip, args.feature_dir, args.dataset, args.runs, args.steps)
    ours = run_ours(args.feature_dir, args.dataset, args.runs, args.steps)
    print("| shots | seed | C (lpclip) | C (ours) | test % (lpclip) | test % (ours) |")
    print("|---|---|---|---|---|---|")
    differ = 0
    for key in sorted(ours):
        (c_official, acc_official), (c_ours, acc_ours) = official.get(key, (float("nan"), float("nan"))), ours[key]
        same = np.isclose(c_official, c_ours, rtol=1e-9, atol=0) and round(acc_ours, 2) == acc_official
        differ += not same
        print(f"| {key[0]} | {key[1]} | {c_official:.6g} | {c_ours:.6g} | {acc_official:.2f} | {acc_ours:.2f} |"
              + ("" if same else " differ"))
    print(f"{len(ours) - differ} of {len(ours)} agree (C to 1e-9 relative, test accuracy to the 2 decimals lpclip "
          "prints)")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
