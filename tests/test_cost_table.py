"""benchmarks/cost_table.py: one row per registered trainer on the demo backbone, in Markdown and CSV with the
documented columns; parameter counts equal the built trainer's trainable parameters; FLOPs are positive and
agree where two trainers or two phases run the same forward. No timing is asserted."""
import csv
import os

import pytest
import torch

from benchmarks import cost_table
from benchmarks.measure import Spec, build_cfg, build_trainer_on_classes, load_classnames
from trainers import BUILT_IN_TRAINERS
from trainers.method import EPOCHS, spec_of, trained_parameter_count

CLASSES = 3


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("costs")
    # the project's trainers by name: in this process the registry also holds other test modules' trainers
    status = cost_table.main(["--out", str(out), "--in-process", "--device", "cpu", "--classes", str(CLASSES),
                              "--warmup", "0", "--steps", "1", "--eval-images", "1", "--trainers", *BUILT_IN_TRAINERS])
    with open(out / "cost_table.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = {row["trainer"]: row for row in reader}
        columns = reader.fieldnames
    return {"status": status, "rows": rows, "columns": columns, "markdown": (out / "cost_table.md").read_text()}


def number(row: dict, key: str):
    return None if row[key] == "" else float(row[key])


def built_trainer(name: str):
    spec = Spec(name, cost_table.config_file(name, cost_table.build_parser().parse_args(["--out", "x"])), "",
                CLASSES, "costs")
    return build_trainer_on_classes(build_cfg(spec), load_classnames(CLASSES))


def test_every_registered_trainer_has_a_row_in_both_files(table):
    assert table["status"] == 0
    assert tuple(table["columns"]) == cost_table.COLUMNS
    assert set(table["rows"]) == set(BUILT_IN_TRAINERS)
    assert all(row["error"] == "" for row in table["rows"].values())
    lines = table["markdown"].splitlines()
    assert any(line.startswith("| trainer | config | training | trainable params") for line in lines)
    for name in BUILT_IN_TRAINERS:
        assert sum(line.startswith(f"| `{name}` |") for line in lines) == 1
    assert "Device: CPU" in table["markdown"] and "host peak resident set" in table["markdown"]


def test_parameter_counts_are_the_built_trainers_trainable_parameters(table):
    for name, row in table["rows"].items():
        trainer = built_trainer(name)
        assert int(row["trainable_params"]) == trained_parameter_count(trainer), name
        if spec_of(type(trainer)).training == EPOCHS:  # what trains is what requires a gradient
            modules = [value for value in vars(trainer).values() if isinstance(value, torch.nn.Module)]
            params = {id(p): p for module in modules for p in module.parameters() if p.requires_grad}
            assert int(row["trainable_params"]) == sum(p.numel() for p in params.values()), name
    coop = built_trainer("CoOp")
    assert int(table["rows"]["CoOp"]["trainable_params"]) == coop.model.prompt_learner.ctx.numel() > 0
    assert int(table["rows"]["ZeroshotCLIP"]["trainable_params"]) == 0
    assert table["rows"]["ZeroshotCLIP"]["training"] == "nothing trained"
    assert table["rows"]["LinearProbeCLIP"]["training"] == "one-pass fit"
    assert table["rows"]["CoOp"]["training"] == "steps"


def test_flops_are_positive_and_consistent(table):
    rows = table["rows"]
    for name, row in rows.items():
        assert number(row, "test_flops_per_image") > 0 and number(row, "eval_images_per_s") > 0, name
        assert number(row, "test_flops_once_per_evaluation") >= 0, name
        if row["training"] == "steps":
            assert number(row, "train_flops_per_image") > 0 and number(row, "train_images_per_s") > 0, name
            assert number(row, "peak_memory_train_mib") > 0, name
        else:
            assert row["train_flops_per_image"] == row["train_images_per_s"] == "", name
    # CoOp's evaluation, cached, runs the plain image tower and the logits as zero-shot CLIP does
    assert number(rows["CoOp"], "test_flops_per_image") == number(rows["ZeroshotCLIP"], "test_flops_per_image")
    assert number(rows["ZeroshotCLIP"], "test_flops_once_per_evaluation") == 0  # its text is encoded at build
    # prompts in the image tower cost more per image
    assert number(rows["MaPLe"], "test_flops_per_image") > number(rows["CoOp"], "test_flops_per_image")
    # same forward in training and evaluation: a training image pays the class side over its batch
    batch = {name: built_trainer(name).cfg.DATALOADER.TRAIN_X.BATCH_SIZE for name in ("CoOp", "MaPLe", "IVLP")}
    for name, size in batch.items():
        row = rows[name]
        expected = number(row, "test_flops_per_image") + number(row, "test_flops_once_per_evaluation") / size
        assert number(row, "train_flops_per_image") == pytest.approx(expected, rel=1e-9), name
    for name in ("CoCoOp", "VPT"):  # no class side to cache (image-conditioned / fixed at build)
        assert number(rows[name], "train_flops_per_image") == number(rows[name], "test_flops_per_image")


def test_a_trainer_in_its_own_process_gives_the_same_counts(table, tmp_path):
    status = cost_table.main(["--out", str(tmp_path), "--trainers", "MaPLe", "--device", "cpu", "--classes",
                              str(CLASSES), "--warmup", "0", "--steps", "1", "--eval-images", "1"])
    with open(tmp_path / "cost_table.csv", newline="", encoding="utf-8") as f:
        [row] = list(csv.DictReader(f))
    assert status == 0
    same = ("trainable_params", "train_flops_per_image", "test_flops_per_image", "test_flops_once_per_evaluation")
    assert {key: row[key] for key in same} == {key: table["rows"]["MaPLe"][key] for key in same}
    assert "the peak of each trainer's own process" in (tmp_path / "cost_table.md").read_text()


def test_configs_follow_the_scripts_and_failures_are_rows(tmp_path):
    def config(name: str, *options: str) -> str:
        path = cost_table.config_file(name, cost_table.build_parser().parse_args(["--out", "x", *options]))
        return os.path.relpath(path, cost_table.REPO)

    assert config("ZeroshotCLIP2") == config("CoOp") == "configs/trainers/CoOp/demo.yaml"
    assert config("MaPLe", "--vit-b16") == "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"
    status = cost_table.main(["--out", str(tmp_path), "--trainers", "CoOp", "--config", "no_such_config",
                              "--in-process", "--device", "cpu"])
    assert status == 1
    with open(tmp_path / "cost_table.csv", newline="", encoding="utf-8") as f:
        [row] = list(csv.DictReader(f))
    assert "no config configs/trainers/CoOp/no_such_config.yaml" in row["error"]
    assert "failed: FileNotFoundError" in (tmp_path / "cost_table.md").read_text()
    with pytest.raises(SystemExit, match="registered: .*CoOp"):
        cost_table.main(["--out", str(tmp_path), "--trainers", "NoSuchTrainer"])


def test_the_readme_column_is_written_from_the_counts(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("| path | what |\n| --- | --- |\n| `CoOp` | x |\n\n"
                      "| trainer | what | trainable parameters (shapes) | folder |\n| --- | --- | --- | --- |\n"
                      "| `A` / `B` | both | old | a |\n| `CoOp` | ctx | old | p |\n| `Probe` | head | old | h |\n"
                      "| `Gone` | kept | old | g |\n")
    rows = [{"trainer": "A", "trainable_params": 0, "training": "nothing trained", "error": ""},
            {"trainer": "B", "trainable_params": 0, "training": "nothing trained", "error": ""},
            {"trainer": "CoOp", "trainable_params": 8192, "training": "steps", "error": ""},
            {"trainer": "Probe", "trainable_params": 5130, "training": "one-pass fit", "error": ""}]
    assert cost_table.update_readme_column(str(readme), rows, 10) == ["A", "B", "CoOp", "Probe"]
    assert readme.read_text().splitlines() == [
        "| path | what |", "| --- | --- |", "| `CoOp` | x |", "",
        "| trainer | what | trainable parameters (shapes) | folder |", "| --- | --- | --- | --- |",
        "| `A` / `B` | both | 0 | a |", "| `CoOp` | ctx | 8,192 | p |",
        "| `Probe` | head | 5,130 (one-pass fit, 10 classes) | h |", "| `Gone` | kept | old | g |"]
