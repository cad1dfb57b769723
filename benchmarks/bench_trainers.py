"""Time a prompt-learning trainer on a randomly initialised CLIP: the median training step (forward +
backward + optimizer step), evaluation throughput (images/s at the config's test batch size) and peak
memory, each measurement in a fresh child process (benchmarks/measure.py) so its peak memory is its own.

With --plain every run is repeated with all exact speed-ups off (the official-style path: full 77-token
text, text re-encoded per evaluation batch, explicit attention) and the table gives our speed-up as a ratio.
With --ablate KEY every run is also repeated with all speed-ups but TRAINER.SPEEDUPS.KEY, so that one's own
gain is measured. --test-classes times one whole `trainer.test()` pass over --eval-images images. With
--floor each row also says how far it is from this machine's floor: the counted floating-point operations
of the measured work divided by the measured rate of a large fp32 matrix product.

Example (the figures in benchmarks/README.md):
  python3 benchmarks/bench_trainers.py --trainer MaPLe \
      --config-file configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml \
      --train-classes 10 500 --eval-classes 1000 --plain --repeats 2 --json maple.json
Trailing KEY VALUE pairs override the config of every run (e.g. TRAINER.SPEEDUPS.TEXT_CHECKPOINTING True).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from dataclasses import asdict
from typing import Iterable, Optional

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.measure import ChildFailed, Spec, run_in_child  # noqa: E402

GIB = 1024 ** 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainer", default="MaPLe", help="registered trainer name (default: MaPLe)")
    parser.add_argument("--config-file", default="configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
                        help="trainer YAML (its batch sizes are used)")
    parser.add_argument("--arch", default="ViT-B/16", help="CLIP architecture, random weights (default ViT-B/16)")
    parser.add_argument("--train-classes", type=int, nargs="*", default=[10, 500],
                        help="class counts for the training-step measurement (none: skip)")
    parser.add_argument("--eval-classes", type=int, nargs="*", default=[1000],
                        help="class counts for the evaluation measurement (none: skip)")
    parser.add_argument("--test-classes", type=int, nargs="*", default=[],
                        help="class counts for a whole test() pass over --eval-images images (none: skip)")
    parser.add_argument("--plain", action="store_true", help="also run with every speed-up off; report ratios")
    parser.add_argument("--ablate", nargs="*", default=[], metavar="KEY",
                        help="TRAINER.SPEEDUPS keys: also run with all speed-ups but KEY; report its gain")
    parser.add_argument("--floor", action="store_true",
                        help="count each measurement's FLOPs (one more untimed run) and report the floor")
    parser.add_argument("--prec", default="fp32", help="the trainer's PREC (fp32, fp16, amp, bf16)")
    parser.add_argument("--warmup", type=int, default=1, help="training steps before timing")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (the median is reported)")
    parser.add_argument("--eval-images", type=int, default=200,
                        help="images timed after the first eval batch; images of a test() pass")
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per measurement (median)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--json", default="bench_trainers.json", help="where to write the results")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every run")
    return parser


def resolve_device(choice: str) -> str:
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def plan(args: argparse.Namespace) -> list[Spec]:
    """Every measurement, repeats interleaved (ours, each ablation and plain alternate, so drift in a shared
    machine's load affects every path alike)."""
    config_file = os.path.abspath(args.config_file)
    if not os.path.isfile(config_file):
        raise SystemExit(f"--config-file {args.config_file} does not exist")
    paths = [(False, [])] + [(False, [key]) for key in args.ablate] + ([(True, [])] if args.plain else [])
    phases = ([("train", n) for n in args.train_classes] + [("eval", n) for n in args.eval_classes]
              + [("test", n) for n in args.test_classes])
    if not phases:
        raise SystemExit("nothing to measure: give --train-classes, --eval-classes and/or --test-classes")
    device = resolve_device(args.device)
    return [Spec(args.trainer, config_file, args.arch, classes, phase, plain, args.prec, args.warmup, args.steps,
                 args.eval_images, device, opts=list(args.opts), disabled=disabled,
                 count_flops=args.floor and not plain and not disabled)  # the floor line is ours
            for _ in range(args.repeats) for phase, classes in phases for plain, disabled in paths]


def path_name(spec: dict) -> str:
    """"ours", "plain" or "without KEY" (all speed-ups but KEY)."""
    if spec["plain"]:
        return "plain"
    disabled = spec.get("disabled") or []
    return "without " + "+".join(disabled) if disabled else "ours"


def run_child(spec: Spec, workdir: str, index: int) -> dict:
    """Measure `spec` in a fresh interpreter; its output is shown only if it fails."""
    try:
        return run_in_child(spec, workdir, f"run{index}")
    except ChildFailed as error:
        raise SystemExit(f"measurement {describe(spec)} failed ({error})") from error


def describe(spec: Spec) -> str:
    return f"{spec.trainer} {spec.arch} {spec.phase} {spec.classes} classes {path_name(asdict(spec))}"


def summarize(results: list[dict], phase: str, classes: int, path: str) -> Optional[dict]:
    """Median over repeats of one measurement; peak memory is the largest seen."""
    runs = [r for r in results if (r["spec"]["phase"], r["spec"]["classes"], path_name(r["spec"])) ==
            (phase, classes, path)]
    if not runs:
        return None
    key, cpu_key = ("step_s", "step_cpu_s") if phase == "train" else ("images_per_s", "images_per_cpu_s")
    summary = {"value": statistics.median(r[key] for r in runs), "runs": [r[key] for r in runs],
               "cpu_value": statistics.median(r[cpu_key] for r in runs),
               "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs)}
    if phase == "eval":
        summary["first_batch_s"] = statistics.median(r["first_batch_s"] for r in runs)
    cuda = [r["peak_cuda_allocated_bytes"] for r in runs if "peak_cuda_allocated_bytes" in r]
    if cuda:
        summary["peak_cuda_allocated_bytes"] = max(cuda)
    if all("flops" in r for r in runs):
        summary["floor"] = _floor(phase, runs, summary["value"])
    return summary


def _floor(phase: str, runs: list[dict], value: float) -> dict:
    """The measured work's FLOPs at the best large-matmul rate seen: the floor in the row's unit, and how
    many times the floor the measurement is."""
    flops, rate = runs[0]["flops"], max(r["matmul_gflops"] for r in runs) * 1e9
    seconds = flops / rate
    floor = seconds if phase == "train" else runs[0]["images"] / seconds
    return {"flops": flops, "matmul_gflops": rate / 1e9, "value": floor,
            "times_floor": value / floor if phase == "train" else floor / value}


def rows(results: list[dict], specs: Iterable[Spec]) -> list[dict]:
    """One row per (phase, classes): ours, plain and the speed-up (plain time / our time), and per ablated
    speed-up KEY the path without it and KEY's own gain (its time / our time)."""
    table = []
    specs = list(specs)
    ablations = list(dict.fromkeys(path_name(asdict(s)) for s in specs if s.disabled and not s.plain))
    for phase, classes in dict.fromkeys((s.phase, s.classes) for s in specs):
        ours, plain = summarize(results, phase, classes, "ours"), summarize(results, phase, classes, "plain")
        row = {"phase": phase, "classes": classes, "unit": "s/step" if phase == "train" else "images/s",
               "ours": ours, "plain": plain, "speedup": None, "cpu_speedup": None, "ablations": {}}
        if plain:
            row["speedup"] = _ratio(phase, ours["value"], plain["value"])
            row["cpu_speedup"] = _ratio(phase, ours["cpu_value"], plain["cpu_value"])
        for path in ablations:
            without = summarize(results, phase, classes, path)
            if without:
                row["ablations"][path] = {**without, "gain": _ratio(phase, ours["value"], without["value"]),
                                          "cpu_gain": _ratio(phase, ours["cpu_value"], without["cpu_value"])}
        table.append(row)
    return table


def _ratio(phase: str, ours: float, plain: float) -> float:
    """How many times faster ours is: a time per step shrinks, a throughput grows."""
    return plain / ours if phase == "train" else ours / plain


def _memory(summary: Optional[dict]) -> str:
    if summary is None:
        return "-"
    peak = summary.get("peak_cuda_allocated_bytes", summary["peak_rss_bytes"])
    return f"{peak / GIB:.2f}"


def format_table(table: list[dict], memory_kind: str) -> str:
    ablations = list(dict.fromkeys(path for row in table for path in row.get("ablations", {})))
    header = ["phase", "classes", "unit", "ours"]
    for path in ablations:
        header += [path, f"gain ({path})", f"{path} peak {memory_kind} GiB"]
    header += ["plain", "speed-up", "speed-up (CPU time)", f"ours peak {memory_kind} GiB",
               f"plain peak {memory_kind} GiB", "floor", "x floor"]
    lines = [header]
    for row in table:
        plain, floor = row["plain"], row["ours"].get("floor")
        line = [row["phase"], str(row["classes"]), row["unit"], f"{row['ours']['value']:.3f}"]
        for path in ablations:
            without = row.get("ablations", {}).get(path)
            line += ["-", "-", "-"] if without is None else [
                f"{without['value']:.3f}", f"{without['gain']:.2f}x", _memory(without)]
        line += ["-" if plain is None else f"{plain['value']:.3f}",
                 "-" if row["speedup"] is None else f"{row['speedup']:.2f}x",
                 "-" if row["cpu_speedup"] is None else f"{row['cpu_speedup']:.2f}x",
                 _memory(row["ours"]), _memory(plain),
                 "-" if floor is None else f"{floor['value']:.3f}",
                 "-" if floor is None else f"{floor['times_floor']:.1f}x"]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(" | ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in lines)


def cpu_model() -> str:
    """`lscpu`'s model name (Linux /proc/cpuinfo), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_report(args: argparse.Namespace, specs: list[Spec], results: list[dict]) -> dict:
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), **results[0]["machine"]}
    return {"trainer": args.trainer, "config_file": args.config_file, "arch": args.arch, "prec": args.prec,
            "opts": list(args.opts), "machine": machine, "table": rows(results, specs[:len(results)]),
            "runs": results}


def write_json(report: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)


def main(argv: Optional[list[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    specs = plan(args)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_trainers_") as workdir:
        for index, spec in enumerate(specs):
            print(f"[{index + 1}/{len(specs)}] {describe(spec)}", file=sys.stderr, flush=True)
            results.append(run_child(spec, workdir, index))
            # after every measurement, so a long run that is stopped keeps what it measured
            report = build_report(args, specs, results)
            write_json(report, args.json)
    machine = report["machine"]
    memory_kind = "CUDA allocated" if machine["device"] == "cuda" else "RSS"
    print(f"{args.trainer} on random {args.arch}, PREC {args.prec}, {machine['device']} "
          f"({machine.get('gpu', machine['cpu'])}, {machine['threads']} threads, torch {machine['torch']})")
    print(format_table(report["table"], memory_kind))
    floors = [row["ours"]["floor"] for row in report["table"] if "floor" in row["ours"]]
    if floors:
        print(f"floor: the measured work's FLOPs at this machine's large-matmul rate "
              f"({max(f['matmul_gflops'] for f in floors):.1f} GFLOP/s, fp32 {2048}x{2048} product); "
              "x floor: how many times the floor a figure is")
    print(f"JSON: {args.json}")
    return report


if __name__ == "__main__":
    main()
