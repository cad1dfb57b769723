"""parse_test_res.py on hand-written logs in the official format."""
import csv
import os
import sys

import pytest

import parse_test_res
from scripts.logs import newest_result, read_log
from scripts.tables import Base2NewTable, harmonic_mean, plot_series, write_plot
from scripts_testutils import eval_log, training_log, write


def make_experiment(root, values, end_signals=None):
    for seed, value in enumerate(values, start=1):
        signal = (end_signals or {}).get(seed, "Finish training")
        write(os.path.join(root, f"seed{seed}", "log.txt"), training_log(value, signal))
    return str(root)


def test_official_summary_mean_and_std(tmp_path, capsys):
    # The CoOp docs' example: seeds 91.81 / 92.01 / 92.17 -> "92.00% +- 0.15%"; seed 2 uses the old end marker.
    exp = make_experiment(tmp_path / "exp", [91.81, 92.01, 92.17], {2: "Finished training"})
    assert parse_test_res.main([exp]) == 0
    out = capsys.readouterr().out
    assert f"Parsing files in {exp}" in out
    assert f"file: {os.path.join(exp, 'seed2', 'log.txt')}. accuracy: 92.01%. " in out
    assert f"Summary of directory: {exp}" in out
    assert "* accuracy: 92.00% +- 0.15%" in out


def test_ci95_and_other_keyword(tmp_path, capsys):
    exp = make_experiment(tmp_path / "exp", [91.8, 92.0, 92.2])
    assert parse_test_res.main([exp, "--ci95"]) == 0
    # std = sqrt(0.08 / 3) = 0.1633; 1.96 * 0.1633 / sqrt(3) = 0.1848
    assert "* accuracy: 92.00% +- 0.18%" in capsys.readouterr().out
    assert parse_test_res.main([exp, "--keyword", "macro_f1"]) == 0
    assert "* macro_f1: 88.00% +- 0.00%" in capsys.readouterr().out


def test_result_only_after_end_signal_and_interrupted_runs_skipped(tmp_path, capsys):
    exp = make_experiment(tmp_path / "exp", [70.0, None, 80.0])
    assert read_log(os.path.join(exp, "seed2", "log.txt")) is None  # its "=> result" block precedes any end signal
    assert parse_test_res.main([exp]) == 0
    out = capsys.readouterr().out
    assert "* accuracy: 75.00% +- 5.00%" in out
    assert "seed2" not in out


def test_newest_log_with_a_result_wins(tmp_path):
    run = tmp_path / "seed1"
    write(str(run / "log.txt"), training_log(50.0))
    write(str(run / "log.txt-2024-01-02-10-00-00"), training_log(60.0))
    write(str(run / "log.txt-2024-01-03-09-00-00"), training_log(None))  # newest, but interrupted
    result = newest_result(str(run))
    assert result.value == 60.0
    assert result.log_path.endswith("log.txt-2024-01-02-10-00-00")


def test_test_log_mode(tmp_path, capsys):
    for seed, value in [(1, 70.5), (2, 71.5)]:
        write(str(tmp_path / f"seed{seed}" / "log.txt"), eval_log(value))
    assert parse_test_res.main([str(tmp_path), "--test-log"]) == 0
    assert "* accuracy: 71.00% +- 0.50%" in capsys.readouterr().out
    # Without --test-log an evaluation log has no training end signal: a clear error, exit status 1.
    assert parse_test_res.main([str(tmp_path)]) == 1
    assert "Nothing found in" in capsys.readouterr().err


def test_multi_exp_average(tmp_path, capsys):
    make_experiment(tmp_path / "caltech101", [90.0, 92.0])
    make_experiment(tmp_path / "dtd", [60.0, 62.0])
    assert parse_test_res.main([str(tmp_path), "--multi-exp"]) == 0
    out = capsys.readouterr().out
    assert "* accuracy: 91.00% +- 1.00%" in out and "* accuracy: 61.00% +- 1.00%" in out
    assert out.rstrip().endswith("Average performance\n* accuracy: 76.00%")


def test_folder_without_log_is_named_in_the_error(tmp_path, capsys):
    make_experiment(tmp_path / "exp", [90.0])
    os.makedirs(tmp_path / "exp" / "seed2")
    assert parse_test_res.main([str(tmp_path / "exp")]) == 1
    assert os.path.join(str(tmp_path / "exp"), "seed2") in capsys.readouterr().err


def make_base2new_tree(root):
    """Two datasets x two trainers (+ a zero-shot baseline evaluated only), in the scripts' layout."""
    numbers = {  # (dataset, trainer): (base per seed, novel per seed)
        ("dtd", "MaPLe"): ([80.0, 82.0], [60.0, 58.0]),
        ("caltech101", "MaPLe"): ([97.0, 97.0], [94.0, 96.0]),
        ("dtd", "CoOp"): ([79.0, 81.0], [40.0, 44.0]),
        ("caltech101", "CoOp"): ([98.0, 98.0], [89.0, 91.0]),
    }
    for (dataset, trainer), (base, novel) in numbers.items():
        common = os.path.join(dataset, "shots_16", trainer, "cfg")
        for seed, (b, n) in enumerate(zip(base, novel), start=1):
            write(os.path.join(root, "train_base", common, f"seed{seed}", "log.txt"), training_log(b))
            write(os.path.join(root, "test_new", common, f"seed{seed}", "log.txt"), eval_log(n))
    common = os.path.join("dtd", "shots_16", "ZeroshotCLIP", "vit_b16", "seed1", "log.txt")
    write(os.path.join(root, "test_base", common), eval_log(53.0))
    write(os.path.join(root, "test_new", common), eval_log(60.0))


def test_base2new_protocol_table(tmp_path, capsys):
    make_base2new_tree(str(tmp_path / "base2new"))
    out_dir = str(tmp_path / "results")
    assert parse_test_res.main(["--protocol", "base2new", str(tmp_path / "base2new"), "--out", out_dir]) == 0
    markdown = open(os.path.join(out_dir, "base2new.md"), encoding="utf-8").read()
    assert markdown in capsys.readouterr().out
    lines = markdown.splitlines()
    # Zero-shot CLIP first, as in the MaPLe paper's Table 1, then CoOp; the rest follow.
    assert lines[0] == ("| Dataset | ZeroshotCLIP Base | ZeroshotCLIP Novel | ZeroshotCLIP HM | CoOp Base | CoOp Novel "
                        "| CoOp HM | MaPLe Base | MaPLe Novel | MaPLe HM |")
    # Paper order: caltech101 before dtd. HM(98, 90) = 93.83; HM(97, 95) = 95.99; HM(80, 42) = 55.08.
    assert lines[2] == "| caltech101 | - | - | - | 98.00 | 90.00 | 93.83 | 97.00 | 95.00 | 95.99 |"
    assert lines[3] == "| dtd | 53.00 | 60.00 | 56.28 | 80.00 | 42.00 | 55.08 | 81.00 | 59.00 | 68.27 |"
    # The average row uses the averaged B and N: CoOp B = 89, N = 66 -> HM 75.79 (not the mean of the HMs, 74.46).
    assert lines[4] == "| **Average** | 53.00 | 60.00 | 56.28 | 89.00 | 66.00 | 75.79 | 89.00 | 77.00 | 82.57 |"
    assert abs(harmonic_mean(89.0, 66.0) - 75.7935) < 1e-3
    # Then the paper's Table 1 layout per dataset: methods as rows, zero-shot CLIP first, mean ± std over seeds.
    dtd = lines[lines.index("**dtd** (mean ± std over seeds)"):]
    assert dtd[2:6] == ["| Method | Base | Novel | HM |", "|---|---|---|---|",
                        "| ZeroshotCLIP | 53.00 ± 0.00 | 60.00 ± 0.00 | 56.28 |",
                        "| CoOp | 80.00 ± 1.00 | 42.00 ± 2.00 | 55.08 |"]

    with open(os.path.join(out_dir, "base2new.csv"), newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["trainer"] for r in rows][:2] == ["ZeroshotCLIP", "ZeroshotCLIP"]  # its dtd row and its average
    dtd_coop = next(r for r in rows if r["dataset"] == "dtd" and r["trainer"] == "CoOp")
    assert (dtd_coop["base"], dtd_coop["base_std"], dtd_coop["novel"], dtd_coop["novel_std"]) == \
        ("80.0000", "1.0000", "42.0000", "2.0000")
    assert dtd_coop["base_seeds"] == "2" and dtd_coop["hm"] == "55.0820"
    assert {r["trainer"] for r in rows if r["dataset"] == "average"} == {"CoOp", "MaPLe", "ZeroshotCLIP"}
    with open(os.path.join(out_dir, "base2new.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_methods_in_the_maple_paper_order_zero_shot_clip_first(tmp_path):
    trainers = ("VPT", "MaPLe", "CoCoOp", "CoOp", "ZeroshotCLIP", "IVLP")
    for trainer in trainers:
        common = os.path.join("dtd", "shots_16", trainer, "cfg", "seed1", "log.txt")
        write(os.path.join(str(tmp_path), "train_base", common), training_log(70.0))
        write(os.path.join(str(tmp_path), "test_new", common), eval_log(60.0))
    table = Base2NewTable.from_tree(str(tmp_path))
    # scripts/protocols.METHOD_ORDER (the papers' methods), then the others (the ablations) alphabetically
    paper_order = ["ZeroshotCLIP", "CoOp", "CoCoOp", "MaPLe", "IVLP", "VPT"]
    assert [method.trainer for method in table.methods] == paper_order
    # The plot draws (and lists in its legend) the methods in the same order: zero-shot CLIP is the first point.
    assert [method.trainer for method, _, _ in plot_series(table)] == paper_order


def test_published_row_for_official_configs(tmp_path):
    root = str(tmp_path)
    common = os.path.join("dtd", "shots_16", "MaPLe", "vit_b16_c2_ep5_batch4_2ctx", "seed1", "log.txt")
    write(os.path.join(root, "train_base", common), training_log(80.0))
    write(os.path.join(root, "test_new", common), eval_log(60.0))
    markdown = parse_test_res.to_markdown(Base2NewTable.from_tree(root))
    assert "| Published (11 datasets) | 82.28 | 75.14 | 78.55 |" in markdown


def test_empty_protocol_tree_is_an_actionable_error(tmp_path, capsys):
    assert parse_test_res.main(["--protocol", "base2new", str(tmp_path)]) == 1
    assert "train_base/" in capsys.readouterr().err


def test_plot_without_matplotlib_says_what_to_install(tmp_path, monkeypatch):
    make_base2new_tree(str(tmp_path))
    table = Base2NewTable.from_tree(str(tmp_path))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    with pytest.raises(RuntimeError, match="requirements-dev.txt"):
        write_plot(table, str(tmp_path / "plot.png"))
