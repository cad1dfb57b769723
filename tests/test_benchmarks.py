"""benchmarks/bench_trainers.py: a smoke run on the tiny architecture writes its table and JSON, --plain
switches every speed-up off, and the table's ratios point the right way. No timing is asserted."""
import json
import os
import subprocess
import sys

import pytest

from benchmarks import bench_trainers
from benchmarks.measure import REPO, Spec, build_cfg, load_classnames, measure, plain_opts

DEMO_MAPLE = os.path.join(REPO, "configs/trainers/MaPLe/tiny.yaml")


def test_smoke_run_prints_the_table_and_writes_the_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "bench_trainers.py"), "--arch", "ViT-Tiny",
         "--config-file", DEMO_MAPLE, "--train-classes", "3", "--eval-classes", "5", "--warmup", "0",
         "--steps", "1", "--eval-images", "10", "--device", "cpu", "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header = next(line for line in proc.stdout.splitlines() if line.startswith("phase"))
    assert "speed-up" in header and "peak RSS GiB" in header
    assert any(line.startswith("train | 3 ") for line in proc.stdout.splitlines())
    assert any(line.startswith("eval  | 5 ") for line in proc.stdout.splitlines())
    report = json.loads(out.read_text())
    assert {"cpu", "cores", "torch", "threads", "device"} <= report["machine"].keys()
    train, evaluation = report["table"]
    assert (train["phase"], train["classes"], train["unit"]) == ("train", 3, "s/step")
    assert (evaluation["phase"], evaluation["classes"], evaluation["unit"]) == ("eval", 5, "images/s")
    assert train["plain"] is None and train["speedup"] is None
    assert train["ours"]["value"] > 0 and train["ours"]["cpu_value"] > 0 and train["ours"]["peak_rss_bytes"] > 0
    assert evaluation["ours"]["value"] > 0 and evaluation["ours"]["first_batch_s"] > 0
    run = report["runs"][1]
    assert run["images"] == run["batch_size"] == 50  # --eval-images 10 rounds up to one full test batch


def test_plain_switches_every_speedup_off_and_measures_both_phases():
    spec = Spec("MaPLe", DEMO_MAPLE, "ViT-Tiny", classes=3, phase="train", plain=True, warmup=0, steps=1)
    cfg = build_cfg(spec)
    assert cfg.TRAINER.EVAL_TEXT_CHUNK == 0
    assert all(value is False for value in cfg.TRAINER.SPEEDUPS.values())
    assert plain_opts(cfg)[-2:] == ["TRAINER.EVAL_TEXT_CHUNK", "0"]
    assert cfg.INPUT.SIZE[0] == 32 and cfg.MODEL.BACKBONE.NAME == "RandomInit-ViT-Tiny"
    trained = measure(spec)
    assert len(trained["step_times_s"]) == len(trained["step_cpu_times_s"]) == 1 and trained["spec"]["plain"]
    spec.phase, spec.eval_images = "eval", 1
    evaluated = measure(spec)
    assert evaluated["images"] == 50 and evaluated["images_per_s"] > 0


def test_plan_interleaves_ours_and_plain_per_repeat():
    args = bench_trainers.build_parser().parse_args(
        ["--config-file", DEMO_MAPLE, "--train-classes", "2", "--eval-classes", "4", "--plain", "--repeats", "2",
         "--device", "cpu", "TRAINER.SPEEDUPS.TEXT_CHECKPOINTING", "True"])
    specs = bench_trainers.plan(args)
    assert [(s.phase, s.classes, s.plain) for s in specs] == [
        ("train", 2, False), ("train", 2, True), ("eval", 4, False), ("eval", 4, True)] * 2
    assert all(s.opts == ["TRAINER.SPEEDUPS.TEXT_CHECKPOINTING", "True"] for s in specs)


def _run(phase: str, plain: bool, value: float, peak: int) -> dict:
    key, cpu_key = ("step_s", "step_cpu_s") if phase == "train" else ("images_per_s", "images_per_cpu_s")
    return {"spec": {"phase": phase, "classes": 10, "plain": plain}, key: value, cpu_key: 2 * value,
            "peak_rss_bytes": peak, "first_batch_s": 1.0}


def test_speedups_are_plain_over_ours_for_steps_and_ours_over_plain_for_throughput():
    specs = [Spec("MaPLe", DEMO_MAPLE, "ViT-Tiny", 10, phase, plain) for phase in ("train", "eval")
             for plain in (False, True)]
    results = [_run("train", False, 2.0, 5), _run("train", True, 6.0, 9), _run("train", False, 4.0, 7),
               _run("eval", False, 30.0, 5), _run("eval", True, 10.0, 5)]
    train, evaluation = bench_trainers.rows(results, specs)
    assert train["ours"]["value"] == 3.0 and train["ours"]["peak_rss_bytes"] == 7  # median time, largest peak
    assert train["speedup"] == train["cpu_speedup"] == 2.0
    assert evaluation["speedup"] == evaluation["cpu_speedup"] == 3.0
    assert "2.00x" in bench_trainers.format_table([train, evaluation], "RSS")


def test_bad_inputs_name_the_valid_choices():
    with pytest.raises(ValueError, match="between 1 and 1000"):
        load_classnames(1001)
    assert len(set(load_classnames(1000))) == 998  # CLIP's list names "missile" and "sunglasses" twice
    with pytest.raises(ValueError, match="ViT-B/16"):
        build_cfg(Spec("MaPLe", DEMO_MAPLE, "ViT-Huge", 3, "train"))


def test_ablation_test_pass_and_floor_columns(tmp_path):
    out = tmp_path / "bench.json"
    report = bench_trainers.main(
        ["--arch", "ViT-Tiny", "--config-file", DEMO_MAPLE, "--train-classes", "--eval-classes",
         "--test-classes", "4", "--eval-images", "60", "--device", "cpu", "--ablate", "SHARED_PREFIX", "--floor",
         "--json", str(out)])
    (test,) = report["table"]
    assert test["phase"] == "test" and test["unit"] == "images/s"
    assert [r["images"] for r in report["runs"]] == [100, 100]  # 2 batches of 50, for each path
    without = test["ablations"]["without SHARED_PREFIX"]
    assert without["gain"] == bench_trainers._ratio("test", test["ours"]["value"], without["value"])
    assert report["runs"][1]["spec"]["disabled"] == ["SHARED_PREFIX"]
    floor = test["ours"]["floor"]
    assert floor["flops"] > 0 and floor["matmul_gflops"] > 0 and floor["times_floor"] > 0
    assert "floor" not in without  # FLOPs are counted for our path only
    # the shared prefix is encoded once instead of once per class: less counted work in a training step (at 60
    # classes; a few classes are encoded whole, the prefix's own pass costing more than it saves)
    flops = [measure(Spec("MaPLe", DEMO_MAPLE, "ViT-Tiny", 60, "train", warmup=0, steps=1, count_flops=True,
                          disabled=disabled))["flops"] for disabled in ([], ["SHARED_PREFIX"])]
    assert flops[0] < flops[1]
    with pytest.raises(ValueError, match="unknown speed-up"):
        build_cfg(Spec("MaPLe", DEMO_MAPLE, "ViT-Tiny", 3, "train", disabled=["NOPE"]))
