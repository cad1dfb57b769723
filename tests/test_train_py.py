"""train.py: the command line end to end (subprocess, with a Dassl-style trainer imported via --import),
the merge order of setup_cfg, --seed 0, and the one-line errors with exit status 2."""
import os
import re
import subprocess
import sys

import pytest
import yaml

import train
from dassl_testutils import make_color_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")


def run_train(args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, ROOT]))
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), "--import", "dassl_e2e_plugin", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=240,
    )


def _accuracy(text):
    return re.findall(r"\* accuracy: ([\d.]+)%", text)


def test_train_resume_and_eval_only_end_to_end(tmp_path):
    data = str(tmp_path / "data")
    make_color_dataset(data, per_class=8, size=10)
    common = [
        "--root", data, "--trainer", "TinyLinear", "--seed", "1",
        "DATASET.NAME", "TinyColors", "DATASET.NUM_SHOTS", "4", "INPUT.SIZE", "(8, 8)",
        "INPUT.TRANSFORMS", "['random_resized_crop', 'random_flip', 'normalize']",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
        "OPTIM.NAME", "sgd", "OPTIM.LR", "0.1", "OPTIM.MAX_EPOCH", "2",
        "OPTIM.LR_SCHEDULER", "cosine", "OPTIM.WARMUP_EPOCH", "1", "OPTIM.WARMUP_TYPE", "constant",
    ]
    out = str(tmp_path / "out")
    first = run_train(["--output-dir", out, *common])
    assert first.returncode == 0, first.stderr
    log = open(os.path.join(out, "log.txt")).read()
    order = [
        "Setting fixed seed: 1", "** Arguments **", "** Config **", "** System info **", "Loading trainer: TinyLinear",
        "Loading dataset: TinyColors", "Creating a 4-shot dataset", "Building transform_train", "# train_x  12",
        "Loading evaluator: Classification", "No checkpoint found, train from scratch", "Initialize tensorboard",
        "epoch [2/2] batch [3/3]", "linear_probe/model.pth.tar-2", "Finish training", "Deploy the last-epoch model",
        "Evaluate on the *test* set", "=> result", "* macro_f1:", "Elapsed:",
    ]
    positions = [log.find(s) for s in order]
    assert -1 not in positions, [s for s, p in zip(order, positions) if p == -1]
    assert positions == sorted(positions)
    assert "CPU run: freed memory is kept for the next tensors" in log  # dassl/utils/host_memory.py (glibc)
    assert re.search(r"epoch \[1/2\] batch \[1/3\] time [\d.]+ \([\d.]+\) data [\d.]+ \([\d.]+\) loss [\d.]+ \([\d.]+\) "
                     r"acc [\d.]+ \([\d.]+\) lr 1\.0000e-05 eta \d+:\d\d:\d\d", log)
    assert sorted(os.listdir(os.path.join(out, "linear_probe"))) == ["checkpoint", "model.pth.tar-2"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(out, "tensorboard")))
    trained_acc = _accuracy(log)
    assert len(trained_acc) == 1

    # re-run: finds the finished checkpoint, does not train again, logs to a new timestamped file
    second = run_train(["--output-dir", out, *common])
    assert second.returncode == 0, second.stderr
    assert "Found checkpoint at" in second.stdout and "Previous epoch: 2" in second.stdout
    assert "epoch [" not in second.stdout
    assert _accuracy(second.stdout) == trained_acc
    assert len([f for f in os.listdir(out) if f.startswith("log.txt-")]) == 1

    # eval-only from the saved epoch: same accuracy, a log and the evaluation's config in its own output folder
    eval_out = str(tmp_path / "eval")
    third = run_train(["--output-dir", eval_out, "--eval-only", "--model-dir", out, "--load-epoch", "2", *common])
    assert third.returncode == 0, third.stderr
    assert _accuracy(third.stdout) == trained_acc
    assert sorted(os.listdir(eval_out)) == ["config.yaml", "log.txt"]


def _args(*argv):
    return train.build_parser().parse_args(list(argv))


def _yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_setup_cfg_merge_order_and_seed_zero(tmp_path):
    train.import_plugins([])
    dataset_yaml = _yaml(tmp_path / "d.yaml", {"DATASET": {"NAME": "A"}, "OPTIM": {"MAX_EPOCH": 3, "LR": 0.5}})
    trainer_yaml = _yaml(tmp_path / "t.yaml", {"OPTIM": {"MAX_EPOCH": 5}, "SEED": 7, "DATASET": {"NAME": "B"}})
    cfg = train.setup_cfg(_args(
        "--dataset-config-file", dataset_yaml, "--config-file", trainer_yaml, "--seed", "0",
        "--trainer", "T1", "--output-dir", "o", "OPTIM.MAX_EPOCH", "9", "TRAINER.NAME", "T2",
    ))
    assert cfg.OPTIM.LR == 0.5 and cfg.DATASET.NAME == "B" and cfg.OPTIM.MAX_EPOCH == 9
    assert cfg.SEED == 0  # --seed 0 is honoured (the official train.py ignored it)
    assert cfg.TRAINER.NAME == "T2" and cfg.OUTPUT_DIR == "o"
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "all"  # method keys from trainers.config.extend_cfg
    assert cfg.is_frozen()
    assert train.setup_cfg(_args("--config-file", trainer_yaml)).SEED == 7  # no --seed: the config's value


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--trainer", "MaPle", "DATASET.NAME", "TinyColors"], r"unknown trainer 'MaPle'; registered trainers: .*MaPLe.*did you mean MaPLe\?"),
        (["--trainer", "TinyLinear", "DATASET.NAME", "TinyColor"], r"unknown dataset 'TinyColor'.*did you mean TinyColors\?"),
        (["--trainer", "TinyLinear", "OPTIM.MAX_EPOCHS", "2"], r"unknown config key OPTIM\.MAX_EPOCHS; did you mean OPTIM\.MAX_EPOCH"),
        (["--trainer", "TinyLinear", "OPTIM.LR", "fast"], r"OPTIM\.LR expects a value of type float .*got fast of type str"),
        (["--config-file", "missing.yaml"], r"trainer config file not found: missing\.yaml"),
        (["--import", "no_such_module_xyz"], r"--import no_such_module_xyz: module not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    import dassl_e2e_plugin  # noqa: F401  (registers TinyLinear / TinyColors in this process)

    with pytest.raises(SystemExit) as exit_info:
        train.main(_args(*argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("train.py: error: ") and err.count("\n") == 1
    assert re.search(message, err), err
