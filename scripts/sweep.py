"""Run a grid of protocol jobs (trainers x datasets x seeds x steps) through a queue over GPU / CPU slots.

Start it through ``bash scripts/sweep.sh`` (which resolves relative paths and runs this module from the
repository root). Settings come from the environment:

  TRAINERS  trainers, comma or space separated; TRAINER:CFG picks a config (default MaPLe).
            ZeroshotCLIP trains nothing: its base2new steps evaluate it on the base / novel classes
            (scripts/zeroshot.sh SUB=base|new), and it is the first method of the table
  DATASETS  datasets (default: the 11 base-to-novel benchmarks)
  SEEDS     seeds (default 1,2,3)
  STEPS     base2new (= base2new_train,base2new_test), xd (= xd_train,xd_test), base2new_train,
            base2new_test, xd_train, xd_test, fewshot, zeroshot (default base2new)
  GPUS      one slot per entry, one job per slot at a time: GPU ids, or 'cpu' (default 0);
            e.g. GPUS=0,1,2,3 or GPUS=cpu,cpu
  SOURCE    source dataset of the xd steps (default imagenet)
  SWEEP_LOGS   folder of the per-job logs (default $OUTPUT_ROOT/sweep_logs)
  RESULTS_DIR  folder of the base-to-novel tables (default $OUTPUT_ROOT/results)
  DRY_RUN=1    list the jobs and whether each is finished; run nothing
Every other setting of the protocol scripts (CFG, DATA, SHOTS, EXTRA_OPTS, OUTPUT_ROOT, SUB, ...) is
passed through to each job.

A job is finished when its run folder's newest log shows the final result (the scripts' CHECK_FINISHED
mode); finished jobs are skipped, so re-running a sweep runs only what is missing. A test job waits for
its training job; a job that fails does not stop the others: it is reported at the end, the jobs that
need it are reported as blocked, and the exit status is 1.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

from dassl.utils.errors import USER_ERROR_STATUS, UserError, error_line

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BENCHMARKS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
              "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
STEP_SCRIPTS = {
    "base2new_train": "base2new_train.sh",
    "base2new_test": "base2new_test.sh",
    "xd_train": "xd_train.sh",
    "xd_test": "xd_test.sh",
    "fewshot": "fewshot.sh",
    "zeroshot": "zeroshot.sh",
}
STEP_ALIASES = {"base2new": ("base2new_train", "base2new_test"), "xd": ("xd_train", "xd_test")}
# A test step runs after the training step of the same trainer / config / seed.
STEP_NEEDS = {"base2new_test": "base2new_train", "xd_test": "xd_train"}
POLL_SECONDS = 0.2


class SweepError(UserError):
    """Bad settings; the message says which variable and the valid choices."""


@dataclass
class Job:
    step: str
    trainer: str
    config: Optional[str]
    dataset: str
    seed: str
    needs: Optional["Job"] = None
    status: str = "pending"  # pending, finished, running, succeeded, failed, blocked
    result: Optional[str] = None
    returncode: Optional[int] = None
    log_path: str = ""
    slot: Optional[str] = None
    process: Optional[subprocess.Popen] = field(default=None, repr=False)

    @property
    def name(self) -> str:
        method = f"{self.trainer}:{self.config}" if self.config else self.trainer
        return f"{self.step} {method} {self.dataset} seed{self.seed}"

    def command(self) -> list[str]:
        return ["bash", os.path.join(REPO_ROOT, "scripts", STEP_SCRIPTS[self.step]), self.dataset, self.seed]

    def environment(self, base: dict[str, str], slot: Optional[str], cpu_threads: int = 1) -> dict[str, str]:
        env = dict(base)
        env["TRAINER"] = self.trainer
        if self.config:
            env["CFG"] = self.config
        if self.trainer == "ZeroshotCLIP" and not self.config:
            # A CFG meant for the trained methods names no CoOp config of zero-shot CLIP: its default.
            env.pop("CFG", None)
        if self.step == "zeroshot":
            # A SUB meant for base2new_test would make the all-class zero-shot run one half.
            env.pop("SUB", None)
        if slot is not None:
            # An empty CUDA_VISIBLE_DEVICES hides every GPU, so a 'cpu' slot runs on the CPU.
            env["CUDA_VISIBLE_DEVICES"] = "" if slot == "cpu" else slot
        if slot == "cpu":
            # Parallel CPU jobs share the cores instead of each starting one thread per core.
            env.setdefault("OMP_NUM_THREADS", str(cpu_threads))
        return env


def split_list(value: str) -> list[str]:
    return [item for item in value.replace(",", " ").split() if item]


def expand_steps(value: str) -> list[str]:
    steps: list[str] = []
    for item in split_list(value):
        if item not in STEP_SCRIPTS and item not in STEP_ALIASES:
            choices = ", ".join(list(STEP_ALIASES) + list(STEP_SCRIPTS))
            raise SweepError(f"STEPS: unknown step '{item}'; choose from {choices}")
        for step in STEP_ALIASES.get(item, (item,)):
            if step not in steps:
                steps.append(step)
    return steps


def check_names(kind: str, names: list[str], valid: list[str]) -> None:
    for name in names:
        if name not in valid:
            raise SweepError(f"{kind}: unknown '{name}'; valid: {' '.join(valid)}")


def available_datasets() -> list[str]:
    folder = os.path.join(REPO_ROOT, "configs", "datasets")
    return sorted(name[:-len(".yaml")] for name in os.listdir(folder) if name.endswith(".yaml"))


def available_trainers() -> list[str]:
    folder = os.path.join(REPO_ROOT, "configs", "trainers")
    return sorted(name for name in os.listdir(folder) if os.path.isdir(os.path.join(folder, name))) + ["ZeroshotCLIP"]


def plan(env: dict[str, str]) -> list[Job]:
    """The jobs of the grid, in launch-preference order, with their training dependencies linked."""
    trainers = [entry.split(":", 1) if ":" in entry else [entry, None]
                for entry in split_list(env.get("TRAINERS", "MaPLe"))]
    datasets = split_list(env.get("DATASETS", " ".join(BENCHMARKS)))
    seeds = split_list(env.get("SEEDS", "1,2,3"))
    steps = expand_steps(env.get("STEPS", "base2new"))
    source = env.get("SOURCE", "imagenet")
    if not trainers or not datasets or not seeds or not steps:
        raise SweepError("TRAINERS, DATASETS, SEEDS and STEPS must each name at least one item")
    check_names("TRAINERS", [t for t, _ in trainers], available_trainers())
    check_names("DATASETS", datasets + ([source] if {"xd_train", "xd_test"} & set(steps) else []),
                available_datasets())
    for seed in seeds:
        if not seed.isdigit():
            raise SweepError(f"SEEDS: '{seed}' is not a non-negative integer")

    jobs: dict[tuple, Job] = {}

    def add(step: str, trainer: str, config: Optional[str], dataset: str, seed: str) -> Job:
        key = (step, trainer, config, dataset, seed)
        if key not in jobs:
            jobs[key] = Job(step, trainer, config, dataset, seed)
        return jobs[key]

    for seed in seeds:
        for dataset in datasets:
            for trainer, config in trainers:
                for step in steps:
                    if step == "zeroshot":
                        # Zero-shot CLIP has no trainer choice and needs one run per dataset, not per seed.
                        add(step, "ZeroshotCLIP", None, dataset, seeds[0])
                        continue
                    train_dataset = source if step.startswith("xd_") else dataset
                    job_dataset = source if step == "xd_train" else dataset
                    job = add(step, trainer, config, job_dataset, seed)
                    if step in STEP_NEEDS:
                        job.needs = add(STEP_NEEDS[step], trainer, config, train_dataset, seed) \
                            if STEP_NEEDS[step] in steps else None
    return list(jobs.values())


def check_finished(job: Job, env: dict[str, str]) -> Optional[str]:
    """The job's result when its run folder already shows one (the script's CHECK_FINISHED mode), else None."""
    check_env = job.environment(env, None)
    check_env["CHECK_FINISHED"] = "1"
    completed = subprocess.run(job.command(), env=check_env, cwd=REPO_ROOT, capture_output=True, text=True)
    if completed.returncode == 0:
        return completed.stdout.strip().splitlines()[-1] if completed.stdout.strip() else "?"
    return None


def log_path(job: Job, log_root: str) -> str:
    method = f"{job.trainer}_{job.config}" if job.config else job.trainer
    return os.path.join(log_root, job.step, method, job.dataset, f"seed{job.seed}.log")


def launch(job: Job, slot: str, env: dict[str, str], log_root: str, cpu_threads: int) -> None:
    job.log_path = log_path(job, log_root)
    os.makedirs(os.path.dirname(job.log_path), exist_ok=True)
    with open(job.log_path, "w", encoding="utf-8") as log:
        log.write(f"# {job.name} on slot {slot}: {' '.join(job.command())}\n")
        log.flush()
        # Its own session, so that an interrupted sweep can stop the job together with train.py.
        job.process = subprocess.Popen(job.command(), env=job.environment(env, slot, cpu_threads), cwd=REPO_ROOT,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    job.status, job.slot = "running", slot
    print(f"[start] {job.name} on {slot}; log: {job.log_path}", flush=True)


def reap(job: Job, env: dict[str, str]) -> bool:
    """Record a job's end; False while it is still running."""
    code = job.process.poll()
    if code is None:
        return False
    job.returncode = code
    job.result = check_finished(job, env) if code == 0 else None
    # The scripts exit 0 only after reading the final result; a missing one still counts as a failure.
    job.status = "succeeded" if job.result is not None else "failed"
    print(f"[{'done' if job.status == 'succeeded' else 'FAILED'}] {job.name}"
          + (f": accuracy {job.result}%" if job.result else f" (exit {code}); log: {job.log_path}"), flush=True)
    return True


def run_queue(jobs: list[Job], slots: list[str], env: dict[str, str], log_root: str) -> None:
    """Run the pending jobs, one per slot at a time, each after the job it needs."""
    free = list(slots)
    cpu_threads = max(1, (os.cpu_count() or 1) // max(1, slots.count("cpu")))
    running: list[Job] = []
    try:
        while True:
            for job in list(running):
                if reap(job, env):
                    running.remove(job)
                    free.append(job.slot)
            for job in jobs:
                if job.status == "pending" and job.needs is not None and job.needs.status in ("failed", "blocked"):
                    job.status = "blocked"
            ready = [job for job in jobs if job.status == "pending"
                     and (job.needs is None or job.needs.status in ("finished", "succeeded"))]
            while free and ready:
                job = ready.pop(0)
                launch(job, free.pop(0), env, log_root, cpu_threads)
                running.append(job)
            if not running and not ready:
                return
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        for job in running:
            os.killpg(job.process.pid, signal.SIGTERM)
            job.process.wait()
            job.status = "failed"
        raise


def summary(jobs: list[Job]) -> str:
    counts = {status: sum(job.status == status for job in jobs)
              for status in ("succeeded", "finished", "failed", "blocked")}
    lines = ["", "=== Sweep summary ===",
             f"{len(jobs)} jobs: {counts['succeeded']} run and finished, {counts['finished']} already finished "
             f"(skipped), {counts['failed']} failed, {counts['blocked']} blocked by a failed job"]
    for job in jobs:
        if job.status in ("succeeded", "finished"):
            lines.append(f"  ok       {job.name}: accuracy {job.result}%")
    for job in jobs:
        if job.status == "failed":
            lines.append(f"  FAILED   {job.name} (exit {job.returncode}); log: {job.log_path}")
        elif job.status == "blocked":
            lines.append(f"  BLOCKED  {job.name}: needs {job.needs.name}")
    return "\n".join(lines)


def aggregate(steps: set[str], env: dict[str, str]) -> int:
    """Write the base-to-novel table when the sweep ran base-to-novel steps; the status of the aggregator."""
    if not steps & {"base2new_train", "base2new_test"}:
        return 0
    out_root = env.get("OUTPUT_ROOT", os.path.join(REPO_ROOT, "output"))
    results = env.get("RESULTS_DIR", os.path.join(out_root, "results"))
    print("\n=== Base-to-novel results ===", flush=True)
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "parse_test_res.py"), "--protocol", "base2new",
                           os.path.join(out_root, "base2new"), "--out", results], cwd=REPO_ROOT, env=env).returncode


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        print(__doc__)
        return 0 if argv[0] in ("-h", "--help") else 2
    env = dict(os.environ)
    try:
        jobs = plan(env)
        slots = split_list(env.get("GPUS", "0"))
        if not slots:
            raise SweepError("GPUS must name at least one slot, e.g. GPUS=0,1 or GPUS=cpu")
    except SweepError as error:
        print(error_line("sweep", error), file=sys.stderr)
        return USER_ERROR_STATUS
    out_root = env.get("OUTPUT_ROOT", os.path.join(REPO_ROOT, "output"))
    log_root = env.get("SWEEP_LOGS", os.path.join(out_root, "sweep_logs"))

    # Each check starts a shell and a small Python process; a few at a time keeps big grids quick to plan.
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda job: check_finished(job, env), jobs))
    for job, result in zip(jobs, results):
        job.result = result
        if result is not None:
            job.status = "finished"
    todo = sum(job.status == "pending" for job in jobs)
    print(f"Sweep: {len(jobs)} jobs, {len(jobs) - todo} already finished, {todo} to run on slots {', '.join(slots)}",
          flush=True)
    if env.get("DRY_RUN") == "1":
        for job in jobs:
            print(f"  {'finished' if job.status == 'finished' else 'to run':9}{job.name}")
        return 0

    run_queue(jobs, slots, env, log_root)
    print(summary(jobs), flush=True)
    aggregator_status = aggregate({job.step for job in jobs}, env)
    failed = any(job.status in ("failed", "blocked") for job in jobs)
    return 1 if failed or aggregator_status else 0


if __name__ == "__main__":
    sys.exit(main())
