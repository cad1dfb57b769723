"""scripts/compare_trainers.py: an official-style file against our trainer, step by step (in fp32, with the same
computation, identical logits), and its usage errors."""
import os
import re

import pytest

from dassl.utils.errors import UsageError
from scripts import compare_trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _arguments(root, *extra, config="IVLP/tiny.yaml"):
    return ["--root", str(root), "--seed", "1", "--dataset-config-file", os.path.join(ROOT, "configs/datasets/demo.yaml"),
            "--config-file", os.path.join(ROOT, "configs/trainers", config), *extra, "DATASET.NUM_SHOTS", "1",
            "TRAINER.SPEEDUPS.TEXT_TRUNCATION", "False", "TRAINER.SPEEDUPS.SHARED_PREFIX", "False"]


def test_official_style_ivlp_gives_our_logits_at_every_step(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLIP_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["--ours", "IVLP", "--steps", "2", "--images", "8",
            *_arguments(tmp_path / "data", "--import", "official_style_ivlp", "--trainer", "OfficialStyleIVLP")]
    assert compare_trainers.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()[-5:]
    assert [line.split(":")[0] for line in lines] == ["after 0 steps", "step 1", "after 1 steps", "step 2",
                                                      "after 2 steps"]
    for line in lines[::2]:
        assert line.endswith("logits differ by 0.00e+00 of the largest; top class agrees for 100.0% of 8 images")
    for line in lines[1::2]:
        ours, theirs = re.findall(r"loss ours ([\d.]+), theirs ([\d.]+)", line)[0]
        assert ours == theirs


def test_each_loss_of_summaries_without_a_loss_key(tmp_path, capsys, monkeypatch):
    """ProGrad's files log `xe_loss` and `kl_loss` and no `loss`: each is compared, in one line per step."""
    monkeypatch.setenv("CLIP_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["--ours", "ProGrad", "--steps", "1", "--images", "4",
            *_arguments(tmp_path / "data", "--import", "official_style_prograd", "--trainer", "OfficialStyleProGrad",
                        config="ProGrad/tiny.yaml")]
    assert compare_trainers.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()[-3:]
    values = re.fullmatch(r"step 1: xe_loss ours ([\d.]+), theirs ([\d.]+); kl_loss ours ([\d.]+), theirs ([\d.]+)",
                          lines[1]).groups()
    assert abs(float(values[0]) - float(values[1])) < 1e-5 and abs(float(values[2]) - float(values[3])) < 1e-5
    for line in lines[::2]:
        difference = float(re.search(r"differ by ([\d.e+-]+) of the largest", line).group(1))
        assert difference < 5e-6 and line.endswith("top class agrees for 100.0% of 4 images")


def test_summaries_that_share_no_loss_are_refused():
    with pytest.raises(UsageError, match="share no loss to compare: ours \\['loss'\\], theirs \\['kl_loss', 'xe_loss'\\]"):
        compare_trainers._losses_line(1, {"loss": 1.0}, {"xe_loss": 1.0, "kl_loss": 0.5})


@pytest.mark.parametrize("extra, message", [
    (["--trainer", "IVLP"], "give the other repository's module with --import"),
    (["--import", "official_style_ivlp"], "give --trainer"),
])
def test_usage_errors_are_one_line(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as stop:
        compare_trainers.main(_arguments(tmp_path, *extra))
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
