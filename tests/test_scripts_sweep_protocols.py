"""The sweep over every protocol: which jobs each method gets (zero-shot CLIP's runs, the probe's missing
base-to-novel and cross-dataset jobs, a source training shared with the few-shot run), the table entry
point, and the cross-dataset, domain-generalisation and few-shot protocols end to end on the demo at a small
size, each table written from the runs the sweep made."""
import csv
import os
import subprocess

import pytest

from scripts import sweep
from scripts.logs import newest_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSED_THROUGH = ("TRAINER", "CFG", "LOADEP", "SUB", "SOURCE", "FORCE", "CHECK_FINISHED", "MODEL_DIR", "RESULTS_DIR",
                  "SWEEP_LOGS", "DRY_RUN", "SHOTS", "FEWSHOT_SHOTS", "XD_TARGETS", "DG_TARGETS", "DATASETS",
                  "TRAINERS", "STEPS", "SEEDS", "GPUS", "EXTRA_OPTS", "PRINT_RUN_DIR")


def names(jobs, step=None, trainer=None):
    return sorted(j.name for j in jobs if (step is None or j.step == step) and (trainer is None or j.trainer == trainer))


def demo_plan(**settings):
    env = {"TRAINERS": "ZeroshotCLIP,LinearProbeCLIP,CoOp", "STEPS": "base2new,xd,dg,fewshot", "SOURCE": "demo",
           "DATASETS": "demo", "SEEDS": "1,2", "FEWSHOT_SHOTS": "1,16", **settings}
    return sweep.plan(env)


def test_each_method_gets_the_jobs_of_its_protocols():
    jobs = demo_plan()
    xd_targets, dg_targets = ("demo_nature", "demo_things", "demo_colours"), \
        ("demo_photo", "demo_drawing", "demo_painting", "demo_mosaic")
    # zero-shot CLIP: its two base-to-novel halves per seed, and one all-class run per dataset involved
    assert names(jobs, "zeroshot") == sorted(f"zeroshot ZeroshotCLIP {d} seed1" for d in ("demo", *xd_targets, *dg_targets))
    assert names(jobs, "base2new_test", "ZeroshotCLIP") == ["base2new_test ZeroshotCLIP demo seed1",
                                                             "base2new_test ZeroshotCLIP demo seed2"]
    # the probe: no base-to-novel, no cross-dataset target; the domain-generalisation targets, its few-shot runs
    probe = [j for j in jobs if j.trainer == "LinearProbeCLIP"]
    assert {j.step for j in probe} == {"fewshot", "xd_test"}
    assert sorted({j.dataset for j in probe if j.step == "xd_test"}) == sorted(dg_targets)
    assert names(jobs, "fewshot", "LinearProbeCLIP") == sorted(f"fewshot LinearProbeCLIP demo {k}shots seed{s}"
                                                                for k in (1, 16) for s in (1, 2))
    # CoOp: every target, evaluated from the 16-shot few-shot run, which is the demo's source training too
    assert sorted({j.dataset for j in jobs if j.trainer == "CoOp" and j.step == "xd_test"}) == \
        sorted(xd_targets + dg_targets)
    assert not [j for j in jobs if j.step == "xd_train"]
    for job in jobs:
        if job.step == "xd_test":
            assert (job.needs.step, job.needs.shots, job.needs.seed) == ("fewshot", "16", job.seed)


def test_a_source_training_of_another_config_stays_its_own_job():
    # ImageNet's few-shot and cross-dataset configs of MaPLe differ: two run folders, two jobs
    env = {"TRAINERS": "MaPLe", "STEPS": "xd,fewshot", "DATASETS": "imagenet", "SEEDS": "1", "FEWSHOT_SHOTS": "16"}
    jobs = sweep.plan(env)
    assert names(jobs, "xd_train") == ["xd_train MaPLe imagenet seed1"]
    assert names(jobs, "fewshot") == ["fewshot MaPLe imagenet 16shots seed1"]
    assert len(names(jobs, "xd_test")) == 10  # the papers' ten cross-dataset targets
    with pytest.raises(sweep.SweepError, match="DG_TARGETS: no targets known for SOURCE=dtd"):
        sweep.plan({"TRAINERS": "MaPLe", "STEPS": "dg", "SOURCE": "dtd"})
    with pytest.raises(sweep.SweepError, match="FEWSHOT_SHOTS: 'x' is not"):
        sweep.plan({**env, "FEWSHOT_SHOTS": "1,x"})


def test_the_result_of_a_job_is_its_scripts_last_line(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("Run this job\n* accuracy: 11.0%\ndemo_photo accuracy: 93.6%\n\n")
    assert sweep.result_line(str(log)) == "93.6"
    log.write_text("Traceback ...\n* accuracy: 11.0%\nerror: boom\n")
    assert sweep.result_line(str(log)) is None
    assert sweep.result_line(str(tmp_path / "missing.log")) is None


def test_the_sweep_writes_the_table_of_every_protocol_it_ran():
    env = {"OUTPUT_ROOT": "/out", "SOURCE": "demo", "TRAINERS": "CoOp,MaPLe", "DATASETS": "demo"}
    commands = sweep.table_commands(env, *sweep.expand_steps("base2new,dg,fewshot"))
    assert [title for title, _ in commands] == ["Base-to-novel", "Domain generalisation", "Few-shot"]
    dg = commands[1][1]
    assert dg[:3] == ["--protocol", "dg", "/out"] and dg[dg.index("--targets") + 1].startswith("demo_photo,")
    assert dg[dg.index("--methods") + 1] == "CoOp,MaPLe" and dg[-2:] == ["--out", "/out/results"]


def run_script(script, tmp_path, *args, **settings):
    env = {k: v for k, v in os.environ.items() if k not in PASSED_THROUGH}
    env.update({"DATA": "data", "OUTPUT_ROOT": "out", "GPUS": "cpu,cpu", **settings})
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", script), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)


SMALL_DEMO = {
    "TRAINERS": "ZeroshotCLIP,LinearProbeCLIP,CoOp", "STEPS": "xd,dg,fewshot", "SOURCE": "demo", "DATASETS": "demo",
    "SEEDS": "1", "SHOTS": "2", "FEWSHOT_SHOTS": "2", "XD_TARGETS": "demo_colours", "DG_TARGETS": "demo_mosaic",
    # seconds per run: one epoch on the tiny random backbone
    "EXTRA_OPTS": "OPTIM.MAX_EPOCH 1 MODEL.BACKBONE.NAME RandomInit-ViT-Tiny",
}


def test_cross_dataset_domain_generalisation_and_fewshot_on_the_demo_end_to_end(tmp_path):
    first = run_script("sweep.sh", tmp_path, **SMALL_DEMO)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert "8 jobs: 8 run and finished, 0 already finished (skipped), 0 failed, 0 blocked" in first.stdout
    out = os.path.join(str(tmp_path), "out")
    coop = os.path.join(out, "demo", "CoOp", "demo_2shots", "nctx16_cscFalse_ctpend")
    source = newest_result(os.path.join(coop, "seed1")).value
    colours = newest_result(os.path.join(out, "evaluation", "CoOp", "demo_2shots", "nctx16_cscFalse_ctpend",
                                         "demo_colours", "seed1"), test_log=True).value
    with open(os.path.join(out, "results", "xd.csv"), newline="", encoding="utf-8") as handle:
        xd = {(r["trainer"], r["dataset"]): r for r in csv.DictReader(handle)}
    assert float(xd[("CoOp", "demo")]["mean"]) == source and float(xd[("CoOp", "demo_colours")]["mean"]) == colours
    assert float(xd[("CoOp", "average")]["mean"]) == colours
    assert {trainer for trainer, _ in xd} == {"ZeroshotCLIP", "CoOp"}
    assert "Not applicable: LinearProbeCLIP" in open(os.path.join(out, "results", "xd.md"), encoding="utf-8").read()
    with open(os.path.join(out, "results", "dg.csv"), newline="", encoding="utf-8") as handle:
        dg = {(r["trainer"], r["dataset"]) for r in csv.DictReader(handle) if r["mean"]}
    assert {("LinearProbeCLIP", "demo_mosaic"), ("CoOp", "demo_mosaic"), ("ZeroshotCLIP", "demo_mosaic")} <= dg
    fewshot = open(os.path.join(out, "results", "fewshot.md"), encoding="utf-8").read()
    assert "| LinearProbeCLIP |  | " in fewshot and "| ZeroshotCLIP | " in fewshot
    for table in ("xd", "dg", "fewshot"):
        assert os.path.isfile(os.path.join(out, "results", f"{table}.png"))



def test_the_table_entry_point_runs_one_table_s_grid(tmp_path):
    dry = run_script("table.sh", tmp_path, "dg", **{**SMALL_DEMO, "DRY_RUN": "1"})
    assert dry.returncode == 0, dry.stderr
    # domain generalisation alone: zero-shot CLIP on the source and the target, a source training and an
    # evaluation per trained method
    assert "Sweep: 6 jobs, 0 already finished, 6 to run" in dry.stdout
    assert "xd_train LinearProbeCLIP demo 2shots seed1" not in dry.stdout and "xd_train LinearProbeCLIP demo seed1" in dry.stdout


def test_the_table_entry_point_names_the_tables():
    result = subprocess.run(["bash", os.path.join(ROOT, "scripts", "table.sh"), "table4"], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "unknown table 'table4': choose base2new, xd, dg or fewshot" in result.stderr
