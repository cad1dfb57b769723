"""Run a grid of protocol jobs (trainers x datasets x seeds x steps) through a queue over GPU / CPU slots.

Start it through ``bash scripts/sweep.sh`` (which resolves relative paths and runs this module from the
repository root). Settings come from the environment:

  TRAINERS  trainers, comma or space separated; TRAINER:CFG picks a config (default MaPLe).
            ZeroshotCLIP trains nothing: its base2new steps evaluate it on the base / novel classes
            (scripts/zeroshot.sh SUB=base|new), and it is the first method of the table
  DATASETS  datasets of the base2new, fewshot and zeroshot steps (default: the 11 benchmarks); in a sweep
            without base2new and fewshot steps, the targets of the xd and dg steps unless XD_TARGETS /
            DG_TARGETS name them
  SEEDS     seeds (default 1,2,3)
  SHOTS     shots per class, one value or a list (default 16)
  FEWSHOT_SHOTS  shots of the fewshot step (default SHOTS; the few-shot curves: 1,2,4,8,16)
  STEPS     protocols: base2new (= base2new_train,base2new_test), xd (= xd_train,xd_test on the cross-dataset
            targets), dg (= xd_train,xd_test on the domain-generalisation targets), fewshot; or single steps:
            base2new_train, base2new_test, xd_train, xd_test, zeroshot (default base2new)
  SOURCE    source dataset of the xd and dg steps (default imagenet)
  XD_TARGETS, DG_TARGETS  their targets (default: the source's targets, scripts/protocols.py: for ImageNet
            the 10 other benchmarks / ImageNet-V2, -Sketch, -A, -R as in the papers; the demo's own)
  GPUS      one slot per entry, one job per slot at a time: GPU ids, or 'cpu' (default 0);
            e.g. GPUS=0,1,2,3 or GPUS=cpu,cpu
  SWEEP_LOGS   folder of the per-job logs (default $OUTPUT_ROOT/sweep_logs)
  RESULTS_DIR  folder of the tables (default $OUTPUT_ROOT/results)
  DRY_RUN=1    list the jobs and whether each is finished; run nothing
Every other setting of the protocol scripts (CFG, DATA, EXTRA_OPTS, OUTPUT_ROOT, SUB, ...) is passed
through to each job.

Methods follow their protocols: ZeroshotCLIP trains nothing (its base2new steps evaluate it on the base and
novel classes, its xd / dg / fewshot steps are zero-shot runs on every dataset involved); a trainer whose
class says it cannot score classes it was not trained on (its SPEC's transfers_to_unseen False: the linear
probe) gets no base2new jobs and no cross-dataset targets. A source training that is also a few-shot run of
the same config (the demo's) is one job.

A job is finished when its run folder's newest log shows the final result (the scripts' CHECK_FINISHED
mode); finished jobs are skipped, so re-running a sweep runs only what is missing. A test job waits for
its training job; a job that fails does not stop the others: it is reported at the end, the jobs that
need it are reported as blocked, and the exit status is 1. At the end the sweep writes the table of every
protocol it ran (parse_test_res.py --protocol, into RESULTS_DIR).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

from dassl.utils.errors import USER_ERROR_STATUS, UserError, error_line
from scripts import protocols
from scripts.methods import transfers_to_unseen_classes

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BENCHMARKS = protocols.BENCHMARKS
ZERO_SHOT = "ZeroshotCLIP"
STEP_SCRIPTS = {
    "base2new_train": "base2new_train.sh",
    "base2new_test": "base2new_test.sh",
    "xd_train": "xd_train.sh",
    "xd_test": "xd_test.sh",
    "fewshot": "fewshot.sh",
    "zeroshot": "zeroshot.sh",
}
STEP_ALIASES = {"base2new": ("base2new_train", "base2new_test"), "xd": ("xd_train", "xd_test"),
                "dg": ("xd_train", "xd_test"), "fewshot": ("fewshot",)}
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
    shots: Optional[str] = None  # SHOTS of the job; None: the scripts' default (or SHOTS as given)
    show_shots: bool = False  # the shot count tells this job from others in names and log paths
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
        shots = f" {self.shots}shots" if self.show_shots else ""
        return f"{self.step} {method} {self.dataset}{shots} seed{self.seed}"

    def command(self) -> list[str]:
        return ["bash", os.path.join(REPO_ROOT, "scripts", STEP_SCRIPTS[self.step]), self.dataset, self.seed]

    def environment(self, base: dict[str, str], slot: Optional[str], cpu_threads: int = 1) -> dict[str, str]:
        env = dict(base)
        env["TRAINER"] = self.trainer
        if self.shots is not None:
            env["SHOTS"] = self.shots
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


def expand_steps(value: str) -> tuple[list[str], list[str]]:
    """(the steps, the protocols asked for by name) of a STEPS value."""
    steps: list[str] = []
    asked: list[str] = []
    for item in split_list(value):
        if item not in STEP_SCRIPTS and item not in STEP_ALIASES:
            choices = ", ".join(dict.fromkeys([*STEP_ALIASES, *STEP_SCRIPTS]))
            raise SweepError(f"STEPS: unknown step '{item}'; choose from {choices}")
        if item in protocols.PROTOCOLS and item not in asked:
            asked.append(item)
        for step in STEP_ALIASES.get(item, (item,)):
            if step not in steps:
                steps.append(step)
    return steps, asked


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


def parse_shots(env: dict[str, str], name: str = "SHOTS") -> list[str]:
    """The values of SHOTS (or FEWSHOT_SHOTS, which defaults to SHOTS); unset: the scripts' default, 16."""
    value = env.get(name) or (env.get("SHOTS") if name != "SHOTS" else None) or "16"
    values = split_list(value)
    for item in values:
        if not item.isdigit():
            raise SweepError(f"{name}: '{item}' is not a non-negative integer")
    return values


def target_lists(env: dict[str, str], steps: list[str], asked: list[str], source: str) -> dict[str, list[str]]:
    """The targets of the xd and dg protocols of this sweep (an explicit xd_test step counts as xd)."""
    lists = {}
    for protocol in ("xd", "dg"):
        if protocol in asked or (protocol == "xd" and "xd_test" in steps and "dg" not in asked):
            # DATASETS names the targets only in a sweep with no step of its own on DATASETS
            own = {"base2new_train", "base2new_test", "fewshot"} & set(steps)
            named = env.get(f"{protocol.upper()}_TARGETS") or (None if own else env.get("DATASETS"))
            targets = split_list(named) if named else list(protocols.targets(protocol, source))
            if not targets:
                raise SweepError(f"{protocol.upper()}_TARGETS: no targets known for SOURCE={source}; name them "
                                 f"(e.g. {protocol.upper()}_TARGETS=dtd,eurosat)")
            lists[protocol] = targets
    return lists


def plan(env: dict[str, str]) -> list[Job]:
    """The jobs of the grid, in launch-preference order, with their training dependencies linked."""
    trainers = [entry.split(":", 1) if ":" in entry else [entry, None]
                for entry in split_list(env.get("TRAINERS", "MaPLe"))]
    datasets = split_list(env.get("DATASETS", " ".join(BENCHMARKS)))
    seeds = split_list(env.get("SEEDS", "1,2,3"))
    steps, asked = expand_steps(env.get("STEPS", "base2new"))
    shots_list = parse_shots(env)
    fewshot_shots = parse_shots(env, "FEWSHOT_SHOTS")
    source = env.get("SOURCE", protocols.DEFAULT_SOURCE)
    if not trainers or not datasets or not seeds or not steps:
        raise SweepError("TRAINERS, DATASETS, SEEDS and STEPS must each name at least one item")
    check_names("TRAINERS", [t for t, _ in trainers], available_trainers())
    targets = target_lists(env, steps, asked, source)
    all_targets = list(dict.fromkeys(t for protocol in targets.values() for t in protocol))
    check_names("DATASETS", datasets + ([source] if {"xd_train", "xd_test"} & set(steps) else []) + all_targets,
                available_datasets())
    for seed in seeds:
        if not seed.isdigit():
            raise SweepError(f"SEEDS: '{seed}' is not a non-negative integer")
    show_shots = len(shots_list) > 1

    jobs: dict[tuple, Job] = {}

    def add(step: str, trainer: str, config: Optional[str], dataset: str, seed: str,
            shots: Optional[str] = None) -> Job:
        key = (step, trainer, config, dataset, seed, shots)
        if key not in jobs:
            jobs[key] = Job(step, trainer, config, dataset, seed, shots,
                            show_shots=shots is not None and (show_shots or step == "fewshot"))
        return jobs[key]


    def zero_shot(config: Optional[str], dataset: str) -> None:
        # zero-shot CLIP trains nothing and has no seed: one evaluation of all classes per dataset
        add("zeroshot", ZERO_SHOT, config, dataset, seeds[0])

    for seed in seeds:
        for shots in shots_list:
            for trainer, config in trainers:
                unseen = transfers_to_unseen_classes(trainer)
                # a probe cannot score the cross-dataset targets' classes, nor the novel ones; the dg ones are its own
                usable = list(dict.fromkeys(t for protocol, ts in targets.items() if unseen or protocol == "dg"
                                            for t in ts))
                for step in steps:
                    if step == "zeroshot":
                        for dataset in datasets:
                            add(step, ZERO_SHOT, None, dataset, seeds[0])
                    elif step.startswith("base2new_"):
                        if not unseen:
                            continue
                        # zero-shot CLIP's base2new steps evaluate it on the base and the novel classes
                        for dataset in datasets:
                            job = add(step, trainer, config, dataset, seed, shots)
                            if step in STEP_NEEDS and STEP_NEEDS[step] in steps:
                                job.needs = add(STEP_NEEDS[step], trainer, config, dataset, seed, shots)
                    elif trainer == ZERO_SHOT:
                        # xd, dg, fewshot: zero-shot runs on the datasets involved
                        for dataset in datasets if step == "fewshot" else [source, *(usable if step == "xd_test" else [])]:
                            zero_shot(config, dataset)
                    elif step == "fewshot":
                        for dataset in datasets:
                            for k in fewshot_shots:
                                add(step, trainer, config, dataset, seed, k)
                    elif step == "xd_train":
                        if usable or not targets:  # a source training that some target evaluates (or asked alone)
                            add(step, trainer, config, source, seed, shots)
                    elif step == "xd_test":
                        for target in usable:
                            job = add(step, trainer, config, target, seed, shots)
                            if "xd_train" in steps:
                                job.needs = add("xd_train", trainer, config, source, seed, shots)
    return merge_shared_trainings(list(jobs.values()), env)


def run_folder(job: Job, env: dict[str, str]) -> Optional[str]:
    """The run folder of a training job of all classes (the script's PRINT_RUN_DIR mode), None if it fails."""
    query_env = job.environment(env, None)
    query_env["PRINT_RUN_DIR"] = "1"
    completed = subprocess.run(job.command(), env=query_env, cwd=REPO_ROOT, capture_output=True, text=True)
    return completed.stdout.strip() if completed.returncode == 0 and completed.stdout.strip() else None


def merge_shared_trainings(jobs: list[Job], env: dict[str, str]) -> list[Job]:
    """A source training (xd_train) that writes the same run folder as a few-shot job of the sweep (same
    trainer, config, dataset, seed and shots: the demo's) is that job: the tests wait for it instead."""
    fewshot = {(j.trainer, j.config, j.dataset, j.seed, j.shots): j for j in jobs if j.step == "fewshot"}
    trainings = [j for j in jobs if j.step == "xd_train"
                 and (j.trainer, j.config, j.dataset, j.seed, j.shots) in fewshot]
    replaced = {}
    for job in trainings:
        twin = fewshot[(job.trainer, job.config, job.dataset, job.seed, job.shots)]
        folder = run_folder(job, env)
        if folder is not None and folder == run_folder(twin, env):
            replaced[id(job)] = twin
    for job in jobs:
        if job.needs is not None and id(job.needs) in replaced:
            job.needs = replaced[id(job.needs)]
    return [job for job in jobs if id(job) not in replaced]


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
    folder = os.path.join(log_root, job.step, method, job.dataset)
    return os.path.join(folder, f"shots{job.shots}" if job.show_shots else "", f"seed{job.seed}.log")


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
    # The scripts exit 0 only after reading the final result, which their last line prints; a missing one still
    # counts as a failure. (Read from the log: checking the folder again would start train.py once more.)
    job.result = result_line(job.log_path) if code == 0 else None
    job.status = "succeeded" if job.result is not None else "failed"
    print(f"[{'done' if job.status == 'succeeded' else 'FAILED'}] {job.name}"
          + (f": accuracy {job.result}%" if job.result else f" (exit {code}); log: {job.log_path}"), flush=True)
    return True


RESULT_LINE = re.compile(r"accuracy: (?P<value>[^%\s]+)%\s*$")


def result_line(log_path: str) -> Optional[str]:
    """The accuracy of a job's last line ("<label> accuracy: X%", the protocol scripts' final line), if any."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            lines = [line for line in handle.read().splitlines() if line.strip()]
    except OSError:
        return None
    match = RESULT_LINE.search(lines[-1]) if lines else None
    return match["value"] if match else None


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


def table_commands(env: dict[str, str], steps: list[str], asked: list[str]) -> list[tuple[str, list[str]]]:
    """(title, parse_test_res.py arguments) of the table of every protocol the sweep's steps ran."""
    out_root = env.get("OUTPUT_ROOT", os.path.join(REPO_ROOT, "output"))
    results = env.get("RESULTS_DIR", os.path.join(out_root, "results"))
    source = env.get("SOURCE", protocols.DEFAULT_SOURCE)
    methods = ",".join(split_list(env.get("TRAINERS", "MaPLe")))
    commands = []
    if {"base2new_train", "base2new_test"} & set(steps):
        commands.append(("Base-to-novel", ["base2new", os.path.join(out_root, "base2new")]))
    for protocol, targets in target_lists(env, steps, asked, source).items():
        title = {"xd": "Cross-dataset", "dg": "Domain generalisation"}[protocol]
        commands.append((title, [protocol, out_root, "--source", source, "--targets", ",".join(targets),
                                 "--methods", methods]))
    if "fewshot" in steps:
        commands.append(("Few-shot", ["fewshot", out_root, "--methods", methods, "--datasets",
                                      ",".join(split_list(env.get("DATASETS", " ".join(BENCHMARKS))))]))
    return [(title, ["--protocol", *args, "--out", results]) for title, args in commands]


def aggregate(steps: list[str], asked: list[str], env: dict[str, str]) -> int:
    """Write the table of every protocol the sweep ran; the status of the aggregator (0 when all were written)."""
    status = 0
    for title, args in table_commands(env, steps, asked):
        print(f"\n=== {title} results ===", flush=True)
        status |= subprocess.run([sys.executable, os.path.join(REPO_ROOT, "parse_test_res.py"), *args], cwd=REPO_ROOT,
                                 env=env).returncode
    return status


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
    steps, asked = expand_steps(env.get("STEPS", "base2new"))
    aggregator_status = aggregate(steps, asked, env)
    failed = any(job.status in ("failed", "blocked") for job in jobs)
    return 1 if failed or aggregator_status else 0


if __name__ == "__main__":
    sys.exit(main())
