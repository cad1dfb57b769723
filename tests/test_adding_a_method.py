"""docs/ADDING_A_METHOD.md's worked example, ExampleAdapter, is one file and one YAML that nothing else in the
code names, and with them alone it runs through the scripts and the sweep into the results table (its
registry, generic tests and run-folder identity are tests/test_registered_trainers.py and test_run_folder.py)."""
import csv
import os
import subprocess

from test_scripts_sweep import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_FILES = ["configs/trainers/ExampleAdapter/demo.yaml", "trainers/example_adapter.py"]


def test_only_its_own_file_and_yaml_name_the_example():
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    naming = sorted(path for path in tracked if not path.startswith(("docs/", "tests/")) and path.endswith(
        (".py", ".sh", ".yaml")) and any(word in open(os.path.join(ROOT, path), encoding="utf-8").read()
                                          for word in ("ExampleAdapter", "EXAMPLE_ADAPTER")))
    assert naming == EXAMPLE_FILES


def test_the_example_is_swept_into_the_base_to_novel_table(tmp_path):
    result = sweep(tmp_path, "ExampleAdapter", SEEDS="1", GPUS="cpu", SHOTS="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 jobs: 2 run and finished" in result.stdout
    with open(os.path.join(str(tmp_path), "out", "results", "base2new.csv"), newline="", encoding="utf-8") as f:
        row = {(row["dataset"], row["trainer"]): row for row in csv.DictReader(f)}[("demo", "ExampleAdapter")]
    assert (row["base_seeds"], row["novel_seeds"]) == ("1", "1") and float(row["hm"]) > 0
    assert "ExampleAdapter" in open(os.path.join(str(tmp_path), "out", "results", "base2new.md"), encoding="utf-8").read()


def test_the_docs_show_the_example_files_as_they_are():
    doc = open(os.path.join(ROOT, "docs", "ADDING_A_METHOD.md"), encoding="utf-8").read()
    for path, language in zip(EXAMPLE_FILES, ("yaml", "python")):
        text = open(os.path.join(ROOT, path), encoding="utf-8").read()
        assert f"```{language}\n{text}```" in doc, path
    assert "docs/ADDING_A_METHOD.md" in open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
