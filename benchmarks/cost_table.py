"""The cost of every registered trainer on the current device, as Markdown and CSV:

    python -m benchmarks.cost_table --out DIR [--vit-b16] [--config NAME] [--trainers NAME ...] [--classes N]
        [--shots 16] [--prec fp32] [--device auto|cpu|cuda] [--warmup 2] [--steps 10] [--eval-images 500]
        [--in-process] [--params-only] [--readme README.md]

Columns: trainable parameters, forward FLOPs per training image and per test image (and the test side's
once-per-evaluation FLOPs), images/s in training and in evaluation, peak memory in each (benchmarks/costs.py
says exactly what each figure measures). Every trainer of TRAINER_REGISTRY gets a row (a new trainer file needs
nothing here); a trainer that learns nothing, or fits in one pass instead of training by steps, has no training
figures and says so. Inputs are random tensors, so data loading is in no figure; the class names are the first
--classes ImageNet ones (their lengths set the text side's cost).

Backbone and configs: by default the demo backbone with each trainer's `demo` config (`--config NAME` picks
another config of every trainer's folder); `--vit-b16` uses randomly initialised ViT-B/16 weights ("RandomInit-
ViT-B/16") with each trainer's official base-to-novel config (its SPEC's, as the scripts take it), the shapes behind the
papers' parameter counts. The config folder is the one the trainer's SPEC names (zero-shot CLIP: CoOp's, as
the scripts use).

Each trainer is measured in a fresh process (its peak memory is its own); `--in-process` measures all in this
one, faster, but the CPU memory figures are then this process's running peak.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import tempfile
import traceback
from typing import Optional

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_trainers import cpu_model, resolve_device  # noqa: E402
from benchmarks.measure import REPO, Spec, run_in_child  # noqa: E402

VIT_B16 = "ViT-B/16"
MIB = 1024 ** 2
COLUMNS = ("trainer", "config", "training", "trainable_params", "train_flops_per_image", "test_flops_per_image",
           "test_flops_once_per_evaluation", "train_images_per_s", "eval_images_per_s", "peak_memory_train_mib",
           "peak_memory_eval_mib", "error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for cost_table.md, cost_table.csv and cost_table.json")
    parser.add_argument("--vit-b16", action="store_true",
                        help="random ViT-B/16 weights and each trainer's official base-to-novel config")
    parser.add_argument("--config", default="", help="config name in every trainer's folder (default: demo; "
                        "with --vit-b16 the official base-to-novel one)")
    parser.add_argument("--trainers", nargs="*", default=[], help="only these registered trainers (default: all)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes (first ImageNet names; default 10)")
    parser.add_argument("--shots", type=int, default=16,
                        help="training images per class a method may size itself by (Tip-Adapter's cache; default 16)")
    parser.add_argument("--prec", default="fp32", help="every trainer's PREC (fp32, fp16, amp, bf16; default fp32)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--warmup", type=int, default=2, help="training steps before timing (default 2)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps, the median reported (default 10)")
    parser.add_argument("--eval-images", type=int, default=500,
                        help="images timed after the first evaluation batch (default 500)")
    parser.add_argument("--in-process", action="store_true", help="measure every trainer in this process")
    parser.add_argument("--params-only", action="store_true",
                        help="count trainable parameters only (no FLOPs, timing or memory: seconds per trainer)")
    parser.add_argument("--readme", default="", metavar="README.md",
                        help="also write the counts into the parameter column of this file's methods table")
    return parser


def registered_trainers() -> list[str]:
    """Every registered trainer: the papers' order of scripts/protocols.py first, then the others by name."""
    import train
    from dassl.engine import TRAINER_REGISTRY
    from scripts.protocols import METHOD_ORDER

    train.import_plugins([])
    names = TRAINER_REGISTRY.registered_names()
    return [n for n in METHOD_ORDER if n in names] + sorted(n for n in names if n not in METHOD_ORDER)


def config_file(trainer: str, args: argparse.Namespace) -> str:
    """configs/trainers/<the SPEC's folder>/<name>.yaml: `--config`, else `demo`, else with --vit-b16 the SPEC's
    base-to-novel config (the scripts' default)."""
    from dassl.engine import TRAINER_REGISTRY
    from trainers.method import spec_of

    spec = spec_of(TRAINER_REGISTRY.get(trainer))
    name = args.config or (spec.config_for("base2new") if args.vit_b16 else "demo")
    if not name:
        raise FileNotFoundError(f"{trainer}'s SPEC declares no base-to-novel config: give --config")
    path = os.path.join(REPO, "configs", "trainers", spec.config_dir, f"{name}.yaml")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config {os.path.relpath(path, REPO)} for {trainer}")
    return path


def measure_all(args: argparse.Namespace) -> list[dict]:
    """One result per trainer: its measured costs, or its config and the error that stopped it."""
    from benchmarks.costs import PARAMS_ONLY, measure_costs

    trainers = registered_trainers()
    unknown = [name for name in args.trainers if name not in trainers]
    if unknown:
        raise SystemExit(f"unknown trainer(s) {unknown}; registered: {', '.join(trainers)}")
    device = resolve_device(args.device)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for trainer in args.trainers or trainers:
            print(f"measuring {trainer} ...", flush=True)
            result = {"trainer": trainer, "config": ""}
            try:
                path = config_file(trainer, args)
                result["config"] = os.path.relpath(path, REPO)
                spec = Spec(trainer, path, VIT_B16 if args.vit_b16 else "", args.classes, PARAMS_ONLY if args.params_only else "costs", prec=args.prec,
                            warmup=args.warmup, steps=args.steps, eval_images=args.eval_images, device=device,
                            shots=args.shots)
                result.update(measure_costs(spec) if args.in_process else
                              run_in_child(spec, workdir, trainer, module="benchmarks.costs"))
            except Exception as error:  # noqa: BLE001 — one trainer's failure is its row, the others still run
                if args.in_process:
                    traceback.print_exc()
                # a child's error ends with its traceback's last line: the exception itself
                lines = str(error).strip().splitlines() or [""]
                result["error"] = f"{type(error).__name__}: {lines[-1]}"
                print(f"  {trainer} failed: {result['error']}", file=sys.stderr)
            results.append(result)
    return results


TRAINING_KINDS = {"epochs": "steps", "fit": "one-pass fit", "nothing": "nothing trained"}  # MethodSpec.training


def training_kind(result: dict) -> str:
    return TRAINING_KINDS.get(result.get("training", ""), result.get("training", ""))


def csv_row(result: dict) -> dict:
    def mib(key: str) -> Optional[float]:
        value = result.get(key)
        return None if value is None else round(value / MIB, 1)

    return {"trainer": result["trainer"], "config": result["config"], "training": training_kind(result),
            "trainable_params": result.get("trainable_params"),
            **{key: result.get(key) for key in ("train_flops_per_image", "test_flops_per_image",
                                                "test_flops_once_per_evaluation", "train_images_per_s",
                                                "eval_images_per_s")},
            "peak_memory_train_mib": mib("peak_memory_train_bytes"), "peak_memory_eval_mib": mib("peak_memory_eval_bytes"),
            "error": result.get("error", "")}


def flops_text(value: Optional[float]) -> str:
    if value is None:
        return "–"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g}"


def number_text(value, digits: str = ".3g") -> str:
    if value is None or value == "":
        return "–"
    return f"{value:,.0f}" if value >= 1000 else format(value, digits)


def memory_label(device: str, in_process: bool) -> str:
    if device == "cuda":
        return "CUDA max_memory_allocated from a reset at the phase's start (model weights included)"
    scope = "the running peak of the one process that measured every trainer so far (--in-process)" \
        if in_process else "the peak of each trainer's own process"
    return (f"host peak resident set (ru_maxrss), {scope}: evaluation = building + evaluation, training = "
            "building + evaluation + training (CPU; the torch runtime included)")


def markdown(rows: list[dict], header: list[str]) -> str:
    titles = ("trainer", "config", "training", "trainable params", "train FLOPs / image", "test FLOPs / image",
              "test FLOPs once / evaluation", "train images/s", "eval images/s", "peak memory train (MiB)",
              "peak memory eval (MiB)")
    lines = header + ["", "| " + " | ".join(titles) + " |", "|" + " --- |" * len(titles)]
    for row in rows:
        if row["error"]:
            lines.append(f"| `{row['trainer']}` | {row['config']} | failed: {row['error']} |" + " |" * 8)
            continue
        cells = [f"`{row['trainer']}`", row["config"], row["training"], f"{row['trainable_params']:,}",
                 flops_text(row["train_flops_per_image"]), flops_text(row["test_flops_per_image"]),
                 flops_text(row["test_flops_once_per_evaluation"]), number_text(row["train_images_per_s"]),
                 number_text(row["eval_images_per_s"]), number_text(row["peak_memory_train_mib"], ".1f"),
                 number_text(row["peak_memory_eval_mib"], ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def load_text(load: Optional[tuple]) -> str:
    return "?" if load is None else " / ".join(f"{value:.1f}" for value in load)


def header_lines(args: argparse.Namespace, results: list[dict], argv: list[str],
                 loads: tuple[Optional[tuple], Optional[tuple]]) -> list[str]:
    measured = next((r for r in results if "machine" in r), {})
    info = measured.get("machine", {})
    device = info.get("gpu") or f"CPU {cpu_model()} ({os.cpu_count()} cores, {info.get('threads', '?')} torch threads)"
    backbone = measured.get("backbone", "RandomInit-ViT-B/16" if args.vit_b16 else "the configs' backbone")
    return [
        "# Cost per trainer",
        "",
        f"Command: `python -m benchmarks.cost_table {' '.join(argv)}`",
        f"Device: {device}; torch {info.get('torch', '?')}; backbone {backbone}; PREC {args.prec}; "
        f"{args.classes} classes (ImageNet names), a training set of {args.shots} shots per class (a cache model's "
        f"size); random inputs. Load average (1 / 5 / 15 min) before: "
        f"{load_text(loads[0])}, after: {load_text(loads[1])} (other processes on the cores slow every figure of speed).",
        "FLOPs: forward only (torch.utils.flop_counter, 2 per multiply-add); per training image = a training "
        "batch's forward over its size; per test image = a later evaluation batch's over its size, the class "
        "side computed once per evaluation in its own column. Images/s: training steps (forward, backward, update) "
        f"and evaluation batches after the first. Memory: {memory_label(info.get('device', 'cpu'), args.in_process)}.",
        "training: steps (an optimizer), one-pass fit (learned without steps: no training figures), nothing trained.",
    ]


def load_average() -> Optional[tuple]:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def write_tables(results: list[dict], args: argparse.Namespace, argv: list[str],
                 loads: tuple[Optional[tuple], Optional[tuple]] = (None, None)) -> dict:
    os.makedirs(args.out, exist_ok=True)
    rows = [csv_row(result) for result in results]
    paths = {kind: os.path.join(args.out, f"cost_table.{kind}") for kind in ("md", "csv", "json")}
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    text = markdown(rows, header_lines(args, results, argv, loads))
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write(text)
    with open(paths["json"], "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    print(text)
    return paths


def parameter_cell(row: dict, classes: int) -> str:
    text = f"{row['trainable_params']:,}"
    if row["training"] != "steps" and row["trainable_params"]:
        text += f" ({row['training']}, {classes} classes)"
    return text


def update_readme_column(path: str, rows: list[dict], classes: int) -> list[str]:
    """Rewrite the "trainable parameters" cells of the Markdown table in `path` whose header has that column: a
    row naming trainers in backticks (`A` / `B`) gets their count (one count, so they must agree). Returns the
    trainers it wrote."""
    by_name = {row["trainer"]: row for row in rows if not row["error"]}
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    column, written = None, []
    for index, line in enumerate(lines):
        cells = line.split("|")[1:-1] if line.startswith("|") else None
        if cells is None:
            column = None
            continue
        if column is None:
            found = [i for i, cell in enumerate(cells) if cell.strip().startswith("trainable parameters")]
            column = found[0] if found else None
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        counts = {parameter_cell(by_name[name], classes) for name in names if name in by_name}
        if len(counts) == 1 and len(cells) > column:
            cells[column] = f" {counts.pop()} "
            lines[index] = "|" + "|".join(cells) + "|"
            written += [name for name in names if name in by_name]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return written


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    before = load_average()
    results = measure_all(args)
    write_tables(results, args, argv, (before, load_average()))
    if args.readme:
        written = update_readme_column(args.readme, [csv_row(result) for result in results], args.classes)
        print(f"{args.readme}: parameter column written for {', '.join(written) or 'no trainer'}")
    failed = [r["trainer"] for r in results if "error" in r]
    if failed:
        print(f"failed: {', '.join(failed)} (see the error column)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
