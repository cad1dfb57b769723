"""Distributed training (dassl/utils/distributed.py): two gloo processes, each on half of every batch, end with
the prompts of one process on the whole batch, report the same full-test-set result, and only rank 0 writes.
Plus the pieces on their own: launcher environments, the shard sampler, the evaluator merge, and that a
single-process run installs nothing."""
import json
import multiprocessing
import os
import re

import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

import train
from datasets.demo import ensure_demo_data
from dassl.utils.distributed import (
    DistributedSetupError,
    LaunchEnv,
    ShardSampler,
    per_process_batch_size,
    read_launch_env,
    shard_loader,
    synchronize_trainable_parameters,
    training_device,
)
from ddp_testutils import free_port, run_train_process, run_train_with_a_bad_loss
from trainers_testutils import demo_args

TIMEOUT_S = 180


def _run_all(jobs, target=run_train_process):
    """Start every (tag, kwargs) job as a spawned process running `target`; returns their exit codes (a process
    still alive after TIMEOUT_S is killed: exit code -9)."""
    ctx = multiprocessing.get_context("spawn")
    procs = [(tag, ctx.Process(target=target, kwargs=kwargs)) for tag, kwargs in jobs]
    for _, p in procs:
        p.start()
    try:
        for _, p in procs:
            p.join(TIMEOUT_S)
    finally:
        for _, p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    return {tag: p.exitcode for tag, p in procs}


def _read(path):
    with open(path) as f:
        return f.read()


def _result_block(text):
    return re.findall(r"\* (total|correct|accuracy|macro_f1): ([\d.,]+)", text)


def test_two_gloo_processes_match_one_process_on_the_whole_batch(tmp_path):
    _two_processes_match_one_process(tmp_path, "USE_CUDA", "False")


@pytest.mark.cuda
def test_two_processes_on_one_gpu_match_one_process(tmp_path):
    """Both processes drive the one GPU (their CUDA tensors go through gloo: NCCL refuses two ranks on a device)."""
    _two_processes_match_one_process(tmp_path, "USE_CUDA", "True", "CUDA_EXACT_FP32", "True")


def _two_processes_match_one_process(tmp_path, *device_opts):
    data, reports = str(tmp_path / "data"), tmp_path / "reports"
    reports.mkdir()
    ensure_demo_data(os.path.join(data, "demo"))  # once here rather than three times over in the processes
    # deterministic transforms (augmentation draws differ per process by design); a large LR without warm-up so
    # that the prompts move far more than the tolerance in the 10 steps (2 epochs x 5 batches of 4 images)
    opts = ["INPUT.TRANSFORMS", "['normalize']", "OPTIM.LR", "0.05", "OPTIM.WARMUP_EPOCH", "-1", "OPTIM.MAX_EPOCH", "2",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "16", *device_opts]
    single_out, ddp_out = str(tmp_path / "single"), str(tmp_path / "ddp")
    port = free_port()
    common = dict(report_dir=str(reports))
    jobs = [("single", dict(argv=demo_args("MaPLe", "MaPLe/tiny.yaml", data, single_out, *opts), tag="single", **common))]
    for rank in (0, 1):
        jobs.append((f"rank{rank}", dict(argv=demo_args("MaPLe", "MaPLe/tiny.yaml", data, ddp_out, *opts), tag=f"rank{rank}",
                                         rank=rank, world_size=2, port=port, output_dir=ddp_out, **common)))
    exitcodes = _run_all(jobs)
    assert exitcodes == {"single": 0, "rank0": 0, "rank1": 0}, {
        tag: _read(reports / f"stdout-{tag}.txt")[-3000:] for tag, code in exitcodes.items() if code != 0}

    single = torch.load(reports / "params-single.pt", map_location="cpu")
    rank0 = torch.load(reports / "params-rank0.pt", map_location="cpu")
    rank1 = torch.load(reports / "params-rank1.pt", map_location="cpu")
    assert len(single["final"]) >= 4  # MaPLe: text context, deep text prompts, couplings
    assert single["final"].keys() == rank0["final"].keys() == rank1["final"].keys()
    moved = max((single["final"][k] - single["initial"][k]).abs().max().item() for k in single["final"])
    assert moved > 1e-2
    for k in single["final"]:
        torch.testing.assert_close(rank0["initial"][k], single["initial"][k], rtol=0, atol=0)
        torch.testing.assert_close(rank0["final"][k], single["final"][k], rtol=0, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
        torch.testing.assert_close(rank1["final"][k], rank0["final"][k], rtol=0, atol=0)

    # the evaluation is gathered: rank 0 reports the full test set, with the single-process numbers
    single_log, ddp_log = _read(os.path.join(single_out, "log.txt")), _read(os.path.join(ddp_out, "log.txt"))
    assert _result_block(single_log) and _result_block(ddp_log) == _result_block(single_log)
    assert "Distributed run: 2 processes (launched by torchrun)" in ddp_log
    assert re.search(r"epoch \[2/2\] batch \[5/5\]", ddp_log)

    # only rank 0 writes: nothing recorded from rank 1, one log, one event file, the single run's file names
    assert json.loads(_read(reports / "writes-rank1.json")) == []
    assert _read(reports / "stdout-rank1.txt") == ""
    listing = {root[len(ddp_out):]: sorted(files) for root, _, files in os.walk(ddp_out)}
    single_listing = {root[len(single_out):]: sorted(files) for root, _, files in os.walk(single_out)}
    assert listing.keys() == single_listing.keys()
    assert listing[""] == single_listing[""] == ["config.yaml", "log.txt"]
    assert len(listing["/tensorboard"]) == 1
    assert listing["/MultiModalPromptLearner"] == single_listing["/MultiModalPromptLearner"]


def test_a_nan_loss_on_one_rank_stops_every_rank_with_the_same_line(tmp_path):
    """Rank 1's loss turns NaN at batch 2 while rank 0's stays finite: both must stop (no one left waiting in a
    collective) with the same one-line error naming that batch, and exit non-zero."""
    data, reports = str(tmp_path / "data"), tmp_path / "reports"
    reports.mkdir()
    ensure_demo_data(os.path.join(data, "demo"))
    argv = demo_args("CoOp", "CoOp/tiny.yaml", data, str(tmp_path / "out"), "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
                     "TRAIN.PRINT_FREQ", "3", "USE_CUDA", "False")
    port = free_port()
    jobs = [(f"rank{rank}", dict(argv=argv, report_dir=str(reports), tag=f"rank{rank}", rank=rank, world_size=2,
                                 port=port, bad_rank=1, bad_batch=1)) for rank in (0, 1)]
    exitcodes = _run_all(jobs, target=run_train_with_a_bad_loss)
    stderr = {tag: _read(reports / f"stderr-{tag}.txt") for tag in exitcodes}
    assert exitcodes == {"rank0": 1, "rank1": 1}, stderr
    last_lines = {tag: text.strip().splitlines()[-1] for tag, text in stderr.items()}
    assert last_lines["rank0"] == last_lines["rank1"], last_lines
    assert re.fullmatch(r"train\.py: error: Loss is infinite or NaN! at epoch \[1/1\] batch \[2/5\]; training stopped, "
                        r".*; loss = nan \(mean over 2 processes\)", last_lines["rank0"]), last_lines["rank0"]
    assert not os.path.exists(tmp_path / "out" / "prompt_learner" / "model.pth.tar-1")


# ----------------------------------------------------------------------------------------------------------------
# Launcher environments


def test_single_process_environments_are_not_distributed():
    assert read_launch_env({}) is None
    assert read_launch_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert read_launch_env({"SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None
    # the batch script of a 4-task allocation (SLURM_PROCID=0 there too, but no srun step): a plain single process
    assert read_launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0"}) is None


def test_torchrun_and_slurm_environments():
    torchrun = {"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1", "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}
    assert read_launch_env(torchrun) == LaunchEnv(rank=5, world_size=8, local_rank=1, source="torchrun")
    slurm = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
             "MASTER_ADDR": "n1", "MASTER_PORT": "1234"}
    assert read_launch_env(slurm) == LaunchEnv(rank=3, world_size=4, local_rank=1, source="SLURM")


@pytest.mark.parametrize("environ, words", [
    ({"SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "2", "MASTER_PORT": "1"}, ["MASTER_ADDR", "export"]),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "a"}, ["MASTER_PORT", "torchrun"]),
    ({"WORLD_SIZE": "two"}, ["WORLD_SIZE", "'two'"]),
    ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"}, ["rank 2", "0..1"]),
])
def test_bad_launch_environments_say_what_to_set(environ, words):
    with pytest.raises(DistributedSetupError) as info:
        read_launch_env(environ)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_global_batch_must_split_evenly():
    assert per_process_batch_size(32, 4) == 8
    with pytest.raises(DistributedSetupError, match=r"DATALOADER.TRAIN_X.BATCH_SIZE=6 .* 4 processes"):
        per_process_batch_size(6, 4)


# ----------------------------------------------------------------------------------------------------------------
# Pieces, without a process group


def test_shard_sampler_splits_each_global_batch_and_drops_the_incomplete_one():
    torch.manual_seed(0)
    order = list(RandomSampler(range(11)))
    torch.manual_seed(0)
    shards = [list(ShardSampler(RandomSampler(range(11)), rank, 2, global_batch=4)) for rank in range(2)]
    # without a process group each rank keeps the order it drew; rank 0 drew what a single process would
    assert shards[0] == order[0:8:2]
    for rank in range(2):
        assert len(ShardSampler(range(11), rank, 2, global_batch=4)) == 4
    per_batch = [list(ShardSampler(range(11), rank, 2, global_batch=4)) for rank in range(2)]
    assert per_batch == [[0, 2, 4, 6], [1, 3, 5, 7]]
    # evaluation: no dropping, no padding, every item exactly once
    eval_shards = [list(ShardSampler(SequentialSampler(range(7)), rank, 3)) for rank in range(3)]
    assert eval_shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert [len(ShardSampler(range(7), rank, 3)) for rank in range(3)] == [3, 2, 2]


def test_classification_gather_gives_the_whole_set_result():
    from dassl.evaluation import build_evaluator

    cfg = train.setup_cfg(train.build_parser().parse_args(["TEST.PER_CLASS_RESULT", "True"]))
    names = {0: "a", 1: "b", 2: "c"}
    torch.manual_seed(0)
    logits, labels = torch.randn(10, 3), torch.randint(0, 3, (10,))
    whole = build_evaluator(cfg, lab2cname=names)
    whole.process(logits, labels)
    parts = [build_evaluator(cfg, lab2cname=names) for _ in range(2)]
    parts[0].process(logits[0::2], labels[0::2])
    parts[1].process(logits[1::2], labels[1::2])
    records = [(p._y_true, p._y_pred) for p in parts]
    parts[1].gather(lambda obj: records)
    assert parts[1].evaluate() == whole.evaluate()


def test_single_process_run_is_untouched():
    loader = DataLoader(list(range(10)), batch_size=4)
    assert shard_loader(loader, is_train=True) is loader
    module = torch.nn.Linear(3, 2)
    module.bias.requires_grad_(False)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    assert synchronize_trainable_parameters([module]) == [module.weight]
    assert module.weight._post_accumulate_grad_hooks is None
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert training_device(use_cuda=False) == torch.device("cpu")
