"""`ImageFolder` (users' own data) and `python -m datasets.check`."""
import json
import os
import random

import pytest

import datasets  # noqa: F401  (registers every dataset)
from dassl.data.datasets import DATASET_REGISTRY
from datasets.check import __main__ as check_cli
from datasets.check import check_dataset, resolve_names
from datasets.layout import DatasetNotFoundError
from tests.datasets_testutils import make_cfg, write_classnames, write_folder_tree, write_json_split


def make_folder(folder, counts):
    write_folder_tree(str(folder), counts)
    write_classnames(str(folder / "classnames.txt"), {"golden_retriever": "golden retriever"})


def test_image_folder_split_is_seeded_saved_and_reused(tmp_path):
    folder = tmp_path / "imagefolder"
    make_folder(folder, {"tabby": 6, "golden_retriever": 4, "zebra": 5})
    (folder / "zebra" / "notes.txt").write_text("not an image")  # other extensions are ignored
    random.seed(123)
    ds = DATASET_REGISTRY.get("ImageFolder")(make_cfg(tmp_path))
    assert ds.classnames == ["golden retriever", "tabby", "zebra"]
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (2 + 3 + 2, 1 + 1 + 1, 1 + 2 + 2)
    split_path = folder / "split_imagefolder.json"
    first = json.loads(split_path.read_text())
    assert first["train"][0][1:] == [0, "golden retriever"]

    # The split does not depend on the global RNG (i.e. on the run's seed): rebuilding gives the same file,
    # and the few-shot cache folder created meanwhile is not taken for a class.
    split_path.unlink()
    random.seed(999)
    DATASET_REGISTRY.get("ImageFolder")(make_cfg(tmp_path, num_shots=1, seed=2))
    assert json.loads(split_path.read_text()) == first


def test_image_folder_from_config_key(tmp_path):
    folder = tmp_path / "elsewhere" / "pets"
    make_folder(folder, {"cat": 4, "dog": 4})
    ds = DATASET_REGISTRY.get("ImageFolder")(make_cfg(tmp_path / "unused", IMAGE_FOLDER=str(folder)))
    assert ds.classnames == ["cat", "dog"] and ds.train_x[0].impath.startswith(str(folder))


def test_image_folder_key_comes_from_the_dataset_class_through_the_command_line(tmp_path):
    """The dataset's own `extend_cfg` adds DATASET.IMAGE_FOLDER, so train.py accepts it like any key."""
    import train

    args = train.build_parser().parse_args(
        ["--dataset-config-file", os.path.join(os.path.dirname(train.__file__), "configs/datasets/imagefolder.yaml"),
         "DATASET.IMAGE_FOLDER", str(tmp_path)])
    train.import_plugins(args.imports)
    assert train.setup_cfg(args).DATASET.IMAGE_FOLDER == str(tmp_path)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"imagefolder(.|\n)*DATASETS.md#imagefolder"):
        DATASET_REGISTRY.get("ImageFolder")(make_cfg(tmp_path))
    (tmp_path / "imagefolder").mkdir()
    with pytest.raises(DatasetNotFoundError, match="class folders"):
        DATASET_REGISTRY.get("ImageFolder")(make_cfg(tmp_path))
    write_folder_tree(str(tmp_path / "imagefolder"), {"ok": 4, "tiny": 3})
    with pytest.raises(ValueError, match=r"at least 4 images.*tiny \(3\)"):
        DATASET_REGISTRY.get("ImageFolder")(make_cfg(tmp_path))


def test_check_reports_found_and_missing(tmp_path, capsys):
    dataset_dir = tmp_path / "dtd"
    (dataset_dir / "images").mkdir(parents=True)
    write_json_split(str(dataset_dir), "images", "split_zhou_DescribableTextures.json", [("banded", "banded"), ("dotted", "dotted")])
    (tmp_path / "oxford_pets" / "images").mkdir(parents=True)

    status = check_dataset("DescribableTextures", str(tmp_path))
    assert status.found and status.num_classes == 2 and status.counts == {"train": 10, "val": 4, "test": 6}

    code = check_cli.main(["--root", str(tmp_path), "dtd", "OxfordPets", "imagenet"])
    out = capsys.readouterr().out
    assert code == 1
    assert "DescribableTextures  found" in out and "train 10  val 4  test 6" in out
    assert "OxfordPets           missing" in out and "split_zhou_OxfordPets.json" in out
    assert "annotations/trainval.txt" in out and "docs/DATASETS.md#oxfordpets" in out
    assert f"dataset folder {os.path.join(str(tmp_path), 'imagenet')}" in out


def test_check_reports_broken_image_list(tmp_path):
    dataset_dir = tmp_path / "eurosat"
    (dataset_dir / "2750").mkdir(parents=True)
    write_json_split(str(dataset_dir), "2750", "split_zhou_EuroSAT.json", [("River", "River")])
    os.remove(dataset_dir / "2750" / "River" / "test_1.jpg")
    with pytest.warns(UserWarning, match="No file found"):
        status = check_dataset("EuroSAT", str(tmp_path))
    assert not status.found and "test_1.jpg" in status.error


def test_check_names(capsys):
    assert len(resolve_names([])) == 15 and "Demo" not in resolve_names([])
    assert resolve_names(["oxford_pets", "imagenetsketch"]) == ["OxfordPets", "ImageNetSketch"]
    with pytest.raises(SystemExit) as info:
        check_cli.main(["--root", "x", "pets"])
    assert info.value.code == 2 and "Unknown dataset(s): pets" in capsys.readouterr().err
