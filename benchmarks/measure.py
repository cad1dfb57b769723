"""One measurement, run in a fresh process so that its peak memory is its own:
`python3 -m benchmarks.measure SPEC.json RESULT.json`.

The trainer is the registered one (its own `build_model`, `forward_backward` and `model_inference`), built
on a randomly initialised CLIP ("RandomInit-<arch>") and on the first N ImageNet class names instead of a
dataset; inputs are random tensors, so data loading is not part of any figure.
"""
from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Callable, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSNAMES_FILE = os.path.join(REPO, "benchmarks", "imagenet_classnames.txt")
# train: a training step; eval: images/s after the first evaluation batch; test: one whole `trainer.test()`
# pass over a fixed number of images (the once-per-evaluation class features included, building excluded).
PHASES = ("train", "eval", "test")


@dataclass
class Spec:
    """What one child process measures (the parent writes it as JSON)."""

    trainer: str
    config_file: str
    arch: str  # an OpenAI architecture name, e.g. "ViT-B/16"; the weights are "RandomInit-<arch>" ("": the config's)
    classes: int
    phase: str  # "train" or "eval"
    plain: bool = False  # every TRAINER.SPEEDUPS switch off and no evaluation chunking
    prec: str = "fp32"
    warmup: int = 1
    steps: int = 3
    eval_images: int = 200
    device: str = "cpu"
    seed: int = 1
    opts: list = field(default_factory=list)  # extra KEY VALUE config overrides (applied last)
    disabled: list = field(default_factory=list)  # TRAINER.SPEEDUPS keys switched off: "all speed-ups but these"
    count_flops: bool = False  # also count the measured work's floating-point operations (one more untimed run)
    shots: int = 16  # training images per class of the stand-in training set (sizes a cache model such as Tip-Adapter's)


def load_classnames(count: int, path: str = CLASSNAMES_FILE) -> list[str]:
    """The first `count` ImageNet class names (CLIP's curated list): real names, because prompt length
    decides the cost of the text side."""
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if not 1 <= count <= len(names):
        raise ValueError(f"the number of classes must be between 1 and {len(names)} (the names in {path}); "
                         f"got {count}")
    return names[:count]


def plain_opts(cfg) -> list[str]:
    """Overrides that switch every exact speed-up off (each boolean under TRAINER.SPEEDUPS, so a new
    switch is covered without editing this file) and encode all classes in one call, as the official code."""
    opts = []
    for key, value in cfg.TRAINER.SPEEDUPS.items():
        if isinstance(value, bool):
            opts += [f"TRAINER.SPEEDUPS.{key}", "False"]
    return opts + ["TRAINER.EVAL_TEXT_CHUNK", "0"]


def precision_key(trainer_name: str) -> str:
    """The config key holding a trainer's precision, as its SPEC declares it (the zero-shot trainers use the
    CoOp node; a trainer declaring none: TRAINER.COOP.PREC, harmless to set)."""
    from dassl.engine import TRAINER_REGISTRY
    from trainers.method import spec_of

    return spec_of(TRAINER_REGISTRY.get(trainer_name)).precision_key or "TRAINER.COOP.PREC"


def build_cfg(spec: Spec):
    """The trainer's config exactly as train.py builds it, plus the benchmark's overrides."""
    import train
    from clip.random_models import RANDOM_MODELS, RANDOM_PREFIX

    opts = []
    if spec.arch:
        backbone = RANDOM_PREFIX + spec.arch
        if backbone not in RANDOM_MODELS:
            names = sorted(name[len(RANDOM_PREFIX):] for name in RANDOM_MODELS)
            raise ValueError(f"unknown architecture {spec.arch!r}; valid: {', '.join(names)}")
        resolution = RANDOM_MODELS[backbone].image_resolution
        opts = ["MODEL.BACKBONE.NAME", backbone, "INPUT.SIZE", f"({resolution}, {resolution})"]
    train.import_plugins([])
    opts += [precision_key(spec.trainer), spec.prec, "USE_CUDA", str(spec.device == "cuda"), "SEED", str(spec.seed)]
    args = ["--trainer", spec.trainer, "--config-file", spec.config_file]
    cfg = train.setup_cfg(train.build_parser().parse_args(args + opts))
    if spec.plain:
        cfg.defrost()
        cfg.merge_from_list(plain_opts(cfg))
    if spec.disabled:
        unknown = [key for key in spec.disabled if key not in cfg.TRAINER.SPEEDUPS]
        if unknown:
            raise ValueError(f"unknown speed-up(s) {unknown}; valid: {', '.join(cfg.TRAINER.SPEEDUPS)}")
        cfg.defrost()
        cfg.merge_from_list([item for key in spec.disabled for item in (f"TRAINER.SPEEDUPS.{key}", "False")])
    if spec.opts:
        cfg.defrost()
        cfg.merge_from_list(list(spec.opts))
    cfg.freeze()
    return cfg


def build_trainer_on_classes(cfg, classnames: list[str], shots: int = 16):
    """The registered trainer `cfg.TRAINER.NAME`, with a stand-in for the DataManager that knows the class names
    and the shape of a `shots`-per-class training set (what a trainer's build_model reads from its data: a
    cache model such as Tip-Adapter's is sized by the training labels and its schedule by the loader's length);
    no image is ever read."""
    from dassl.engine import TRAINER_REGISTRY

    base = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    train_x = [SimpleNamespace(impath="", label=label, domain=0, classname=name)
               for label, name in enumerate(classnames) for _ in range(shots)]
    batches = math.ceil(len(train_x) / max(cfg.DATALOADER.TRAIN_X.BATCH_SIZE, 1))

    class OnClassNames(base):
        def build_data_loader(self) -> None:
            self.dm = SimpleNamespace(dataset=SimpleNamespace(classnames=list(classnames), train_x=train_x))
            self.train_loader_u = self.val_loader = self.test_loader = None
            self.train_loader_x = [None] * batches  # its length only (batches per epoch): never iterated
            self.num_classes = len(classnames)
            self.num_source_domains = 1
            self.lab2cname = dict(enumerate(classnames))

    OnClassNames.__name__ = base.__name__
    return OnClassNames(cfg)


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_images(count: int, resolution: int, device, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, resolution, resolution, generator=generator).to(device)


def time_training(trainer, cfg, warmup: int, steps: int) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of each measured `forward_backward` (forward + backward + optimizer
    step) after `warmup`. CPU seconds hardly change when other processes share the cores (wall seconds
    do), so on a shared machine they are the steadier figure."""
    import torch

    batch_size = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
    generator = torch.Generator().manual_seed(cfg.SEED)
    batch = {
        "img": random_images(batch_size, cfg.INPUT.SIZE[0], "cpu", cfg.SEED),
        "label": torch.randint(trainer.num_classes, (batch_size,), generator=generator),
    }
    trainer.set_model_mode("train")
    # Mid-epoch: the per-epoch LR step of the last batch is not part of a step's cost.
    trainer.batch_idx, trainer.num_batches = 0, 2
    wall, cpu = [], []
    for step in range(warmup + steps):
        _synchronize(trainer.device)
        start, start_cpu = time.perf_counter(), time.process_time()
        trainer.forward_backward(batch)
        _synchronize(trainer.device)
        if step >= warmup:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def time_evaluation(trainer, cfg, images: int) -> dict:
    """Throughput of `model_inference` in eval mode with TEST.BATCH_SIZE batches.

    The first batch is timed on its own: it pays the once-per-evaluation work (the evaluation cache of
    class features); the throughput is over the following ceil(images / batch) full batches, the rate of
    the rest of an evaluation.
    """
    import torch

    batch_size = cfg.DATALOADER.TEST.BATCH_SIZE
    batch = random_images(batch_size, cfg.INPUT.SIZE[0], trainer.device, cfg.SEED)
    n_batches = max(1, math.ceil(images / batch_size))
    trainer.set_model_mode("eval")
    with torch.no_grad():
        _synchronize(trainer.device)
        start = time.perf_counter()
        trainer.model_inference(batch)
        _synchronize(trainer.device)
        first = time.perf_counter() - start
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(n_batches):
            trainer.model_inference(batch)
        _synchronize(trainer.device)
        elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    images = n_batches * batch_size
    return {"first_batch_s": first, "images": images, "seconds": elapsed, "images_per_s": images / elapsed,
            "cpu_seconds": elapsed_cpu, "images_per_cpu_s": images / elapsed_cpu, "batch_size": batch_size}


def time_test_pass(trainer, cfg, images: int) -> dict:
    """Seconds of one whole `trainer.test()` over ceil(images / TEST.BATCH_SIZE) batches of random images:
    what an evaluation costs after the model is built, the once-per-evaluation class features included."""
    import torch

    batch_size = cfg.DATALOADER.TEST.BATCH_SIZE
    n_batches = max(1, math.ceil(images / batch_size))
    batch = {"img": random_images(batch_size, cfg.INPUT.SIZE[0], "cpu", cfg.SEED),
             "label": torch.arange(batch_size) % trainer.num_classes}
    trainer.test_loader = [batch] * n_batches
    _synchronize(trainer.device)
    start, start_cpu = time.perf_counter(), time.process_time()
    trainer.test()
    _synchronize(trainer.device)
    elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    images = n_batches * batch_size
    return {"images": images, "seconds": elapsed, "images_per_s": images / elapsed, "cpu_seconds": elapsed_cpu,
            "images_per_cpu_s": images / elapsed_cpu, "batch_size": batch_size}


def counted_flops(run) -> int:
    """Floating-point operations (2 per multiply-add) of the matrix products, convolutions and attention
    that `run()` performs, backward included (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def matmul_gflops(device, size: int = 2048, repeats: int = 5) -> float:
    """The best rate of a large fp32 matrix product on this machine (GFLOP/s): the floor's yardstick."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=generator).to(device) for _ in range(2))
    best = float("inf")
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        a @ b
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def measured_work_flops(trainer, cfg, phase: str, images: int) -> int:
    """FLOPs of what the phase timed: one training step; one evaluation batch after the first (eval); the
    whole test pass = the first batch (class features included) + the later batches (test)."""
    import torch

    if phase == "train":
        batch_size = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
        batch = {"img": random_images(batch_size, cfg.INPUT.SIZE[0], "cpu", cfg.SEED),
                 "label": torch.arange(batch_size) % trainer.num_classes}
        trainer.set_model_mode("train")
        return counted_flops(lambda: trainer.forward_backward(batch))
    batch_size = cfg.DATALOADER.TEST.BATCH_SIZE
    batch = random_images(batch_size, cfg.INPUT.SIZE[0], trainer.device, cfg.SEED)
    trainer.set_model_mode("eval")
    if hasattr(trainer.model, "_cache"):
        trainer.model._cache = None  # a cold first batch
    with torch.no_grad():
        first = counted_flops(lambda: trainer.model_inference(batch))
        later = counted_flops(lambda: trainer.model_inference(batch))
    n_batches = max(1, math.ceil(images / batch_size))
    return later * n_batches if phase == "eval" else first + later * (n_batches - 1)


def _status_bytes(field_name: str) -> Optional[int]:
    """A "kB" field of /proc/self/status (Linux), in bytes; None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_memory(device, prefix: str = "") -> dict:
    """Peak resident memory of this process (it ran one measurement only) and, on CUDA, the peak memory
    allocated to tensors and reserved by the caching allocator (what the GPU actually holds for this
    process, what another process could not use) since the last `reset_cuda_peaks`; keys get `prefix`."""
    import torch

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    memory = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale}
    if device.type == "cuda":
        memory["peak_cuda_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        memory["peak_cuda_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    return {prefix + key: value for key, value in memory.items()}


def reset_cuda_peaks(device) -> None:
    """Start a new phase of the CUDA peaks (the RSS peak of a process cannot be reset)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def machine(device) -> dict:
    import platform

    import torch

    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "device": device.type}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def prepare_process(spec: Spec):
    """The config of `spec`, with this process's math and memory settings as train.py makes them and the seed set."""
    from dassl.utils import keep_freed_memory, set_cuda_math, set_random_seed

    cfg = build_cfg(spec)
    if spec.device == "cuda":
        set_cuda_math(exact_fp32=cfg.CUDA_EXACT_FP32)
    else:
        keep_freed_memory()
    set_random_seed(cfg.SEED)
    return cfg


def measure(spec: Spec) -> dict:
    """Build the trainer for `spec` and time its phase; the result dict is what the parent tabulates."""
    if spec.phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}; got {spec.phase!r}")
    cfg = prepare_process(spec)
    start = time.perf_counter()
    trainer = build_trainer_on_classes(cfg, load_classnames(spec.classes), spec.shots)
    build_s = time.perf_counter() - start
    result = {"spec": asdict(spec), "build_s": build_s, "rss_after_build_bytes": _status_bytes("VmRSS")}
    # Per phase: the build (CLIP weights, prompts) on its own, then the measured phase from a reset peak, so
    # the phase's figure is what training or evaluation adds at most, not a whole-process high-water mark.
    result.update(peak_memory(trainer.device, prefix="build_"))
    reset_cuda_peaks(trainer.device)
    if spec.phase == "train":
        if not hasattr(trainer, "optim"):
            raise ValueError(f"{spec.trainer} has no optimizer: it does not train (measure its evaluation only)")
        wall, cpu = time_training(trainer, cfg, spec.warmup, spec.steps)
        result.update(step_times_s=wall, step_s=statistics.median(wall), step_cpu_times_s=cpu,
                      step_cpu_s=statistics.median(cpu))
    elif spec.phase == "eval":
        result.update(time_evaluation(trainer, cfg, spec.eval_images))
    else:
        result.update(time_test_pass(trainer, cfg, spec.eval_images))
    result.update(peak_memory(trainer.device), machine=machine(trainer.device))
    if spec.count_flops:
        result["flops"] = measured_work_flops(trainer, cfg, spec.phase, spec.eval_images)
        result["matmul_gflops"] = matmul_gflops(trainer.device)
    return result


def child_main(module: str, run: Callable[[Spec], dict], argv: list[str]) -> int:
    """`python3 -m <module> SPEC.json RESULT.json`: `run` the spec and write its result (the child side of
    `run_in_child`)."""
    if len(argv) != 2:
        print(f"usage: python3 -m {module} SPEC.json RESULT.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        spec = Spec(**json.load(f))
    result = run(spec)
    with open(argv[1], "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    return 0


class ChildFailed(RuntimeError):
    """A measurement process exited with an error; the message ends with its output."""


def run_in_child(spec: Spec, workdir: str, name: str, module: str = "benchmarks.measure") -> dict:
    """Run `python3 -m <module>` on `spec` in a fresh interpreter (files `<name>.spec.json` / `.result.json` in
    `workdir`); its output is kept only for the error when it fails."""
    spec_file, result_file = (os.path.join(workdir, f"{name}.{kind}.json") for kind in ("spec", "result"))
    with open(spec_file, "w", encoding="utf-8") as f:
        json.dump(asdict(spec), f)
    proc = subprocess.run([sys.executable, "-m", module, spec_file, result_file], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise ChildFailed(f"exit {proc.returncode}:\n{proc.stdout[-4000:]}")
    with open(result_file, encoding="utf-8") as f:
        return json.load(f)


if __name__ == "__main__":
    sys.exit(child_main("benchmarks.measure", measure, sys.argv[1:]))
