"""Logger tee and re-run naming, the Classification result block, macro F1, compute_accuracy, meters."""
import os
import re
import sys

import pytest
import torch

from dassl.config import get_cfg_default
from dassl.evaluation import build_evaluator
from dassl.evaluation.evaluator import macro_f1_score
from dassl.metrics import compute_accuracy
from dassl.utils import MetricMeter, setup_logger


@pytest.fixture
def restore_stdout():
    original = sys.stdout
    yield
    if sys.stdout is not original:
        sys.stdout.close()
        sys.stdout = original


def test_logger_tees_and_rerun_gets_timestamped_file(tmp_path, restore_stdout, capsys):
    setup_logger(str(tmp_path))
    print("first run")
    sys.stdout.flush()
    assert (tmp_path / "log.txt").read_text() == "first run\n"
    setup_logger(str(tmp_path))
    print("second run")
    sys.stdout.flush()
    names = sorted(os.listdir(tmp_path))
    assert names[0] == "log.txt" and len(names) == 2
    assert re.fullmatch(r"log\.txt-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}", names[1])
    assert (tmp_path / names[1]).read_text() == "second run\n"
    assert (tmp_path / "log.txt").read_text() == "first run\n"
    assert "first run" in capsys.readouterr().out  # console still gets everything
    setup_logger(str(tmp_path / "custom.log"))
    print("x")
    sys.stdout.flush()
    assert (tmp_path / "custom.log").read_text() == "x\n"


def test_classification_block_exact(capsys):
    cfg = get_cfg_default()
    evaluator = build_evaluator(cfg, lab2cname={0: "a", 1: "b", 2: "c"})
    # 1,500 samples: 1,234 correct
    gt = torch.tensor([0, 1, 2] * 500)
    logits = torch.nn.functional.one_hot(gt, 3).float()
    wrong = torch.arange(1500) >= 1234
    logits[wrong] = torch.nn.functional.one_hot((gt[wrong] + 1) % 3, 3).float()
    evaluator.reset()
    evaluator.process(logits[:700], gt[:700])
    evaluator.process(logits[700:], gt[700:])
    results = evaluator.evaluate()
    f1 = 100 * macro_f1_score(gt.tolist(), logits.argmax(1).tolist())
    out = capsys.readouterr().out
    assert out == (
        "Loading evaluator: Classification\n"
        "=> result\n* total: 1,500\n* correct: 1,234\n* accuracy: 82.3%\n* error: 17.7%\n"
        f"* macro_f1: {f1:.1f}%\n"
    )
    assert list(results) == ["accuracy", "error_rate", "macro_f1"]
    assert results["accuracy"] == pytest.approx(100 * 1234 / 1500)


def test_macro_f1_against_hand_computation():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 1]
    # class 0: p=1, r=2/3 -> 0.8; class 1: p=1/3, r=1/2 -> 0.4; class 2: p=0, r=0 -> 0
    assert macro_f1_score(y_true, y_pred) == pytest.approx((0.8 + 0.4 + 0.0) / 3)
    # labels only predicted (3) do not count
    assert macro_f1_score([0, 0], [0, 3]) == pytest.approx(2 / 3)


def test_per_class_result_and_cmat(tmp_path, capsys):
    cfg = get_cfg_default()
    cfg.TEST.PER_CLASS_RESULT = True
    cfg.TEST.COMPUTE_CMAT = True
    cfg.OUTPUT_DIR = str(tmp_path)
    evaluator = build_evaluator(cfg, lab2cname={0: "cat", 1: "dog"})
    evaluator.process(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1, 1]))
    results = evaluator.evaluate()
    out = capsys.readouterr().out
    assert "* class: 0 (cat)\ttotal: 1\tcorrect: 1\tacc: 100.0%" in out
    assert "* class: 1 (dog)\ttotal: 2\tcorrect: 1\tacc: 50.0%" in out
    assert "* average: 75.0%" in out and results["perclass_accuracy"] == 75.0
    cmat = torch.load(tmp_path / "cmat.pt", weights_only=True)
    assert torch.allclose(cmat, torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=cmat.dtype))


def test_compute_accuracy_and_meter():
    output = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5], [0.3, 0.4, 0.3]])
    target = torch.tensor([1, 1, 0, 0])
    top1, top2 = compute_accuracy((output, None), target, topk=(1, 2))
    assert top1.shape == (1,) and top1.item() == 25.0 and top2.item() == 75.0
    meter = MetricMeter()
    meter.update({"loss": torch.tensor(2.0), "acc": 50.0})
    meter.update({"loss": 1.0, "acc": 100.0})
    assert str(meter) == "loss 1.0000 (1.5000) acc 100.0000 (75.0000)"
