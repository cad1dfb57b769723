"""Time LinearProbeCLIP's fit: lpclip's C search (7 grid values, then 2 fits per bisection round) with
scikit-learn's lbfgs on features of a given shape, the way a run fits them.

    python benchmarks/bench_linear_probe.py --problem 1000 16 512 --problem 100 16 512 --json probe.json

A problem is CLASSES SHOTS DIM: CLASSES x SHOTS training and CLASSES x min(SHOTS, 4) validation features of
dimension DIM (ImageNet with ViT-B/16: 1000 16 512; the demo: 20 16 128), drawn as noisy class clusters of
CLIP-like scale, so that lbfgs does the work it does on real features (a separable toy problem converges in
a few iterations and would flatter it). Wall and process CPU time of the whole search and per fit are
printed and written to the JSON; the solver's threads are the BLAS threads (OMP_NUM_THREADS).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from trainers.linear_probe import LPCLIP_C_GRID, search_c, validation_shots  # noqa: E402


def features(classes: int, per_class: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class clusters with about as much spread within a class as between centres (hard, like real features)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + rng.normal(scale=1.5, size=(len(labels), dim)), labels


def time_problem(classes: int, shots: int, dim: int, steps: int, max_iter: int) -> dict:
    centres_seed = 0
    train = features(classes, shots, dim, centres_seed)
    val = features(classes, validation_shots(shots), dim, centres_seed)
    val = (val[0] + np.random.default_rng(1).normal(scale=0.1, size=val[0].shape), val[1])
    wall, cpu = time.perf_counter(), time.process_time()
    result = search_c(train, val, LPCLIP_C_GRID, steps, max_iter, log=lambda line: None)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    fits = len(result.trace)
    return {"classes": classes, "shots": shots, "dim": dim, "fits": fits, "wall_s": wall, "cpu_s": cpu,
            "wall_per_fit_s": wall / fits, "unconverged": result.unconverged, "C": result.C}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problem", nargs=3, type=int, action="append", metavar=("CLASSES", "SHOTS", "DIM"),
                        help="a problem to time (repeatable; default: the demo's 20 16 128 and 100 16 512)")
    parser.add_argument("--steps", type=int, default=8, help="bisection rounds (lpclip's --num_step 8)")
    parser.add_argument("--max-iter", type=int, default=1000, help="lbfgs iterations per fit (lpclip's 1000)")
    parser.add_argument("--json", default="bench_linear_probe.json")
    args = parser.parse_args(argv)
    problems = args.problem or [[20, 16, 128], [100, 16, 512]]
    import sklearn

    report = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "python": platform.python_version(), "sklearn": sklearn.__version__,
                          "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "")}, "table": []}
    print("classes | shots | dim | fits | search wall s | search CPU s | wall s per fit | fits at max_iter")
    for classes, shots, dim in problems:
        row = time_problem(classes, shots, dim, args.steps, args.max_iter)
        report["table"].append(row)
        print(f"{classes} | {shots} | {dim} | {row['fits']} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | "
              f"{row['wall_per_fit_s']:.3f} | {row['unconverged']}", flush=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
