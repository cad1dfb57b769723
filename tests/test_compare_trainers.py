"""scripts/compare_trainers.py: an official-style file against our trainer, step by step (in fp32, with the same
computation, identical logits), and its usage errors."""
import os
import re

import pytest

from scripts import compare_trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _arguments(root, *extra):
    return ["--root", str(root), "--seed", "1", "--dataset-config-file", os.path.join(ROOT, "configs/datasets/demo.yaml"),
            "--config-file", os.path.join(ROOT, "configs/trainers/IVLP/tiny.yaml"), *extra, "DATASET.NUM_SHOTS", "1",
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
