"""predict.py: top-k labels with probabilities for files and folders, CSV output, class names from a list,
a file or a dataset config, zero-shot CLIP, and clear errors for bad inputs. Its predictions are the API's
(which tests/test_api.py ties to the trainer's own evaluation)."""
import csv
import os
import re

import pytest

import api
import predict
from promptsrc_testutils import demo_base2new_run

DEMO_DATASET = os.path.join("configs", "datasets", "demo.yaml")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return demo_base2new_run(tmp_path_factory)


def class_folder(run, name: str) -> str:
    return os.path.join(run["data"], "demo", "images", name)


def test_folder_with_csv_matches_the_api(run, tmp_path, capsys):
    folder = class_folder(run, "circle")
    out_csv = str(tmp_path / "predictions.csv")
    assert predict.main(["--model-dir", run["train_dir"], folder, "--topk", "2", "--csv", out_csv]) == 0
    images = sorted(os.path.join(folder, name) for name in os.listdir(folder))
    expected = api.load_prompted_clip(run["train_dir"]).classify(images, topk=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(images)
    assert lines[0] == f"{images[0]}: " + ", ".join(f"{n} ({p:.3f})" for n, p in expected[0])
    with open(out_csv, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "rank", "classname", "probability"] and len(rows) == 1 + 2 * len(images)
    for (image, rank, name, prob), (exp_name, exp_prob) in zip(rows[1::2], (ranked[0] for ranked in expected)):
        assert rank == "1" and name == exp_name and float(prob) == pytest.approx(exp_prob, abs=1e-6)
    assert [row[0] for row in rows[1::2]] == images


def test_class_names_from_a_file_a_list_or_a_dataset_config(run, tmp_path, capsys):
    image = os.path.join(class_folder(run, "heart"), "test_000.png")
    names_file = tmp_path / "classes.txt"
    names_file.write_text("heart\n\nsquare\ncircle\n")
    assert predict.main(["--model-dir", run["train_dir"], "--classnames", str(names_file), image, "--topk", "3"]) == 0
    from_file = capsys.readouterr().out
    assert predict.main(["--model-dir", run["train_dir"], "--classnames", "heart, square,circle", image,
                         "--topk", "3"]) == 0
    assert capsys.readouterr().out == from_file
    assert sorted(n.split(" (")[0] for n in from_file.split(": ", 1)[1].split(", ")) == ["circle", "heart", "square"]

    # the novel classes of the run's dataset
    assert predict.main(["--model-dir", run["train_dir"], "--dataset-config-file", DEMO_DATASET, "--root",
                         run["data"], "--opt", "DATASET.SUBSAMPLE_CLASSES", "new", image, "--topk", "10"]) == 0
    novel = api.dataset_classnames(api.build_config(dataset_config_file=DEMO_DATASET, opts=[
        "DATASET.ROOT", run["data"], "DATASET.SUBSAMPLE_CLASSES", "new"]))
    printed = capsys.readouterr().out.split(": ", 1)[1].split(", ")
    assert sorted(n.split(" (")[0] for n in printed) == sorted(novel)


def test_zero_shot(run, capsys):
    image = os.path.join(class_folder(run, "heart"), "test_000.png")
    args = ["--zero-shot", "--config-file", os.path.join("configs", "trainers", "CoOp", "tiny.yaml"), image]
    assert predict.main([*args, "--classnames", "heart,circle"]) == 0
    line = capsys.readouterr().out.strip()
    expected = api.zero_shot_clip(["heart", "circle"], config_file=args[2]).classify(image, topk=2)[0]
    assert line == f"{image}: " + ", ".join(f"{n} ({p:.3f})" for n, p in expected)
    assert predict.main([*args, "--dataset-config-file", DEMO_DATASET, "--root", run["data"]]) == 0
    assert len(capsys.readouterr().out.split(": ", 1)[1].split(", ")) == 5


def test_bad_inputs_exit_2_with_a_message(run, tmp_path, capsys):
    image = os.path.join(class_folder(run, "heart"), "test_000.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\x00" * 10)
    cases = [
        (["--model-dir", run["train_dir"], str(empty)], "no image files"),
        (["--model-dir", run["train_dir"], str(broken)], 'Cannot read image ".*broken.jpg"'),
        (["--model-dir", run["train_dir"], str(tmp_path / "nope.png")], "image or folder not found"),
        (["--model-dir", str(tmp_path / "no_run"), image], "not found"),
        (["--model-dir", run["train_dir"], "--classnames", "a,,b", image], "empty class name"),
        (["--model-dir", run["train_dir"], "--topk", "0", image], "--topk must be >= 1"),
        (["--zero-shot", image], "--zero-shot needs --classnames"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            predict.main(argv)
        assert exit_info.value.code == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("predict.py: error: ")
        assert re.search(message, err), (argv, err)
