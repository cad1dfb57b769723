"""parse_test_res.py --protocol xd | dg | fewshot on generated run folders in the scripts' layout: the layouts,
means, population std and averages, the published rows, missing runs shown as missing cells and named."""
import csv
import os

import pytest

import parse_test_res
from scripts import protocols
from scripts.protocol_tables import FewShotTable, TransferTable
from scripts_testutils import eval_log, training_log, write


def train_run(root, dataset, trainer, experiment, seed, value):
    write(os.path.join(root, dataset, trainer, experiment, f"seed{seed}", "log.txt"), training_log(value))


def eval_run(root, trainer, experiment, target, seed, value):
    write(os.path.join(root, "evaluation", trainer, experiment, target, f"seed{seed}", "log.txt"), eval_log(value))


def zero_shot(root, config, dataset, value):
    write(os.path.join(root, "ZeroshotCLIP", config, dataset, "log.txt"), eval_log(value))


MAPLE_XD = "vit_b16_c2_ep5_batch4_2ctx_cross_datasets_16shots"
COOP_XD = os.path.join("vit_b16_ep50_16shots", "nctx16_cscFalse_ctpend")


def make_transfer_tree(root):
    for seed, (source, caltech, dtd) in enumerate([(70.0, 93.0, 44.0), (72.0, 95.0, 46.0)], start=1):
        train_run(root, "imagenet", "MaPLe", MAPLE_XD, seed, source)
        eval_run(root, "MaPLe", MAPLE_XD, "caltech101", seed, caltech)
        eval_run(root, "MaPLe", MAPLE_XD, "dtd", seed, dtd)
        train_run(root, "imagenet", "CoOp", COOP_XD, seed, source + 1)
        eval_run(root, "CoOp", COOP_XD, "caltech101", seed, caltech - 1)
        eval_run(root, "CoOp", COOP_XD, "imagenet_a", seed, 50.0 + seed)
    eval_run(root, "CoOp", COOP_XD, "dtd", 1, 40.0)  # seed 2 of CoOp on dtd is missing
    for dataset, value in [("imagenet", 66.7), ("caltech101", 93.3), ("dtd", 44.5), ("imagenet_a", 47.8)]:
        zero_shot(root, "vit_b16", dataset, value)
    # the linear probe: a source run and a domain-generalisation target, no cross-dataset target
    for seed in (1, 2):
        train_run(root, "imagenet", "LinearProbeCLIP", "vit_b16_16shots", seed, 73.0)
        eval_run(root, "LinearProbeCLIP", "vit_b16_16shots", "imagenet_a", seed, 30.0 + 2 * seed)
    # a few-shot run of another shot count on the source is no cross-dataset experiment
    train_run(root, "imagenet", "MaPLe", "vit_b16_c2_ep5_batch4_2ctx_4shots", 1, 60.0)


def test_cross_dataset_table_layout_averages_missing_cells_and_published_rows(tmp_path, capsys):
    root = str(tmp_path / "output")
    make_transfer_tree(root)
    out = str(tmp_path / "results")
    assert parse_test_res.main(["--protocol", "xd", root, "--out", out]) == 0
    captured = capsys.readouterr()
    markdown = open(os.path.join(out, "xd.md"), encoding="utf-8").read()
    assert markdown in captured.out
    lines = markdown.splitlines()
    header = lines[2].split(" | ")
    assert header[1] == "imagenet (source)" and header[2:12] == list(protocols.BENCHMARKS[1:])
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| Method")]
    # zero-shot CLIP first, then CoOp, then MaPLe, each followed by its published row where there is one
    assert [row.split(" | ")[0][2:] for row in rows] == [
        "ZeroshotCLIP", "CoOp", "CoOp, published (MaPLe Table 2 / PromptSRC)",
        "MaPLe", "MaPLe, published (MaPLe Table 2 / PromptSRC)"]
    maple = rows[3].split(" | ")
    assert maple[1:3] == ["71.00 ± 1.00", "94.00 ± 1.00"] and maple[9] == "45.00 ± 1.00"
    assert maple[-1] == "- |"  # 8 of the 10 targets have no run: no average
    assert rows[4].split(" | ")[1:4] == ["70.72", "93.53", "90.49"]
    coop = rows[1].split(" | ")
    assert coop[9] == "-"  # dtd: seed 2 missing, never averaged over the one seed there is
    assert "Not applicable" not in markdown  # the probe has no cross-dataset run here, so nothing to set aside
    err = captured.err
    assert "CoOp: dtd seed2" in err and "MaPLe: oxford_pets seed1" in err and "MaPLe: oxford_pets seed2" in err
    assert "ZeroshotCLIP: oxford_pets its run" in err
    with open(os.path.join(out, "xd.csv"), newline="", encoding="utf-8") as handle:
        table = {(r["trainer"], r["dataset"]): r for r in csv.DictReader(handle)}
    assert table[("MaPLe", "imagenet")]["role"] == "source"
    assert (table[("MaPLe", "caltech101")]["mean"], table[("MaPLe", "caltech101")]["std"]) == ("94.0000", "1.0000")
    assert table[("CoOp", "caltech101")]["variant"] == "nctx16_cscFalse_ctpend"
    assert table[("CoOp", "dtd")]["mean"] == "" and table[("MaPLe", "average")]["mean"] == ""
    with open(os.path.join(out, "xd.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_average_is_over_the_targets_and_its_spread_over_the_seeds(tmp_path):
    root = str(tmp_path)
    make_transfer_tree(root)
    table = TransferTable.from_tree(root, "xd", "imagenet", ["caltech101", "dtd"], [("MaPLe", None)])
    (row,) = table.rows
    average = table.average(row)
    # per seed: (93 + 44) / 2 = 68.5 and (95 + 46) / 2 = 70.5 -> 69.5 ± 1.0; the source (70, 72) is not in it
    assert (average.mean, average.std, average.seeds) == (69.5, 1.0, 2)
    assert table.published(row) is None  # two targets: not the papers' table


def test_domain_generalisation_keeps_the_probe_and_the_cross_dataset_table_sets_it_aside(tmp_path):
    root = str(tmp_path)
    make_transfer_tree(root)
    dg = TransferTable.from_tree(root, "dg", "imagenet")
    assert dg.columns == ["imagenet", "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
    labels = [dg.label(row) for row in dg.rows]
    assert labels == ["ZeroshotCLIP", "LinearProbeCLIP", "CoOp"]  # the papers' order; MaPLe has no dg run
    probe = dg.rows[1]
    assert dg.cells[(probe, "imagenet_a")].stat.mean == 33.0 and dg.cells[(probe, "imagenet")].stat.mean == 73.0
    assert "ZeroshotCLIP: imagenetv2 its run" in dg.missing
    # asked for by name, the probe gets no cross-dataset row, and the table says why
    xd = TransferTable.from_tree(root, "xd", "imagenet", methods=[("LinearProbeCLIP", None), ("MaPLe", None)])
    assert [xd.label(row) for row in xd.rows] == ["MaPLe"]
    assert "Not applicable: LinearProbeCLIP" in xd.to_markdown()


def test_a_method_asked_for_without_any_run_is_a_row_of_missing_cells(tmp_path):
    root = str(tmp_path)
    make_transfer_tree(root)
    table = TransferTable.from_tree(root, "xd", "imagenet", ["caltech101"], [("MaPLe", None), ("CoCoOp", None)])
    assert [table.label(row) for row in table.rows] == ["CoCoOp", "MaPLe"]
    assert "CoCoOp: no finished run at all (imagenet, caltech101)" in table.missing
    assert "| CoCoOp | - | - | - |" in table.to_markdown()


@pytest.mark.parametrize("published, targets", [(protocols.PUBLISHED_XD, 10), (protocols.PUBLISHED_DG, 4)])
def test_each_published_average_is_the_mean_of_its_targets(published, targets):
    for key, row in published.items():
        assert len(row) == targets + 2, key
        assert abs(sum(row[1:-1]) / targets - row[-1]) < 0.006, key  # the papers round to 2 decimals


def make_fewshot_tree(root):
    coop = lambda k: os.path.join(f"vit_b16_{k}shots", "nctx16_cscFalse_ctpend")  # noqa: E731
    for dataset, base in [("caltech101", 80.0), ("dtd", 40.0)]:
        for k in (1, 2):
            for seed in (1, 2):
                train_run(root, dataset, "CoOp", coop(k), seed, base + 10 * k + seed)
                train_run(root, dataset, "LinearProbeCLIP", f"vit_b16_{k}shots", seed, base - 20 + 10 * k + seed)
        zero_shot(root, "vit_b16", dataset, base + 5)
    os.remove(os.path.join(root, "dtd", "LinearProbeCLIP", "vit_b16_2shots", "seed2", "log.txt"))
    write(os.path.join(root, "dtd", "LinearProbeCLIP", "vit_b16_2shots", "seed2", "log.txt"), training_log(None))


def test_fewshot_table_per_dataset_average_missing_cells_and_figure(tmp_path, capsys):
    root = str(tmp_path / "output")
    make_fewshot_tree(root)
    out = str(tmp_path / "results")
    assert parse_test_res.main(["--protocol", "fewshot", root, "--out", out]) == 0
    captured = capsys.readouterr()
    table = FewShotTable.from_tree(root)
    assert table.datasets == ["caltech101", "dtd"]  # the papers' order
    assert [m.trainer for m in table.methods] == ["ZeroshotCLIP", "LinearProbeCLIP", "CoOp"]
    coop = table.methods[2]
    # caltech101: 91, 92 at 1 shot; dtd: 51, 52 -> per seed 71, 72 -> 71.5 ± 0.5
    average = table.average(coop, 1)
    assert (average.mean, average.std) == (71.5, 0.5)
    probe = table.methods[1]
    assert table.cells[("dtd", probe, 2)].stat is None and table.average(probe, 2) is None
    assert table.average(probe, 1).mean == 51.5
    assert "LinearProbeCLIP: dtd 2 shots seed2" in captured.err
    markdown = open(os.path.join(out, "fewshot.md"), encoding="utf-8").read()
    assert "**Average over 2 datasets** (caltech101, dtd)" in markdown
    assert "| ZeroshotCLIP | 65.00 ± 0.00 |  |  |" in markdown  # zero-shot CLIP at 0 shots only
    assert "| CoOp |  | 71.50 ± 0.50 | 81.50 ± 0.50 |" in markdown
    with open(os.path.join(out, "fewshot.csv"), newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["dataset"], r["shots"]) for r in rows if r["trainer"] == "ZeroshotCLIP"} == \
        {("caltech101", "0"), ("dtd", "0"), ("average", "0")}
    with open(os.path.join(out, "fewshot.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_fewshot_table_filters_methods_and_datasets(tmp_path):
    root = str(tmp_path)
    make_fewshot_tree(root)
    table = FewShotTable.from_tree(root, ["dtd"], [("CoOp", "vit_b16")])
    assert table.datasets == ["dtd"] and [m.trainer for m in table.methods] == ["CoOp"]
    assert "Average over" not in table.to_markdown()


def test_an_empty_tree_is_an_actionable_error(tmp_path, capsys):
    for protocol in ("xd", "dg", "fewshot"):
        assert parse_test_res.main(["--protocol", protocol, str(tmp_path)]) == 1
        assert "expected" in capsys.readouterr().err
