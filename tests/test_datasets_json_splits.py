"""The nine benchmarks with a `split_zhou_*.json`: reading the split, few-shot caches, base/new subsampling."""
import os
import pickle
import random
import re
import warnings

import pytest

import datasets  # noqa: F401  (registers every dataset)
from dassl.data.datasets import DATASET_REGISTRY, Datum
from datasets.dtd import DescribableTextures
from datasets.layout import DatasetNotFoundError
from datasets.oxford_pets import OxfordPets
from tests.datasets_testutils import make_cfg, write_json_split

# registry name, folder under the root, image folder = split prefix ("" = dataset folder), split file
JSON_DATASETS = [
    ("Caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    ("OxfordPets", "oxford_pets", "images", "split_zhou_OxfordPets.json"),
    ("StanfordCars", "stanford_cars", "", "split_zhou_StanfordCars.json"),
    ("OxfordFlowers", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    ("Food101", "food-101", "images", "split_zhou_Food101.json"),
    ("SUN397", "sun397", "SUN397", "split_zhou_SUN397.json"),
    ("DescribableTextures", "dtd", "images", "split_zhou_DescribableTextures.json"),
    ("EuroSAT", "eurosat", "2750", "split_zhou_EuroSAT.json"),
    ("UCF101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
]
CLASSES = [("c0", "class zero"), ("c1", "class one"), ("c2", "class two"), ("c3", "class three"), ("c4", "class four")]


def build(tmp_path, folder, prefix, split_file, required_extra=()):
    dataset_dir = tmp_path / folder
    dataset_dir.mkdir()
    for extra in required_extra:
        (dataset_dir / extra).mkdir(parents=True, exist_ok=True)
    return write_json_split(str(dataset_dir), prefix, split_file, CLASSES)


def load(name, tmp_path, **kw):
    return DATASET_REGISTRY.get(name)(make_cfg(tmp_path, **kw))


def required_dirs(name):
    return DATASET_REGISTRY.get(name).required


@pytest.mark.parametrize("name,folder,prefix,split_file", JSON_DATASETS)
def test_reads_split_json(tmp_path, name, folder, prefix, split_file):
    split = build(tmp_path, folder, prefix, split_file, required_dirs(name))
    ds = load(name, tmp_path)
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (25, 10, 15)
    assert ds.classnames == [c for _, c in CLASSES] and ds.num_classes == 5
    base = os.path.join(str(tmp_path), folder, prefix) if prefix else os.path.join(str(tmp_path), folder)
    first = ds.train_x[0]
    assert first.impath == os.path.join(base, split["train"][0][0]) and os.path.isabs(first.impath)
    assert [d.label for d in ds.test] == [e[1] for e in split["test"]]
    assert os.path.isdir(tmp_path / folder / "split_fewshot")  # created even without few-shot, as officially


@pytest.mark.parametrize("name,folder,prefix,split_file", JSON_DATASETS)
def test_few_shot_cache_and_subsampling(tmp_path, name, folder, prefix, split_file):
    build(tmp_path, folder, prefix, split_file, required_dirs(name))
    random.seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every class has enough images: no short-class warning
        ds = load(name, tmp_path, num_shots=2, seed=3)
    cache = tmp_path / folder / "split_fewshot" / "shot_2-seed_3.pkl"
    assert cache.is_file()
    assert (len(ds.train_x), len(ds.val)) == (10, 10)  # 2 train shots; val min(2, 4) = 2 of 2

    random.seed(99)  # the cache, not the RNG, decides now
    again = load(name, tmp_path, num_shots=2, seed=3)
    assert [d.impath for d in again.train_x] == [d.impath for d in ds.train_x]

    base = load(name, tmp_path, num_shots=2, seed=3, subsample="base")
    new = load(name, tmp_path, num_shots=2, seed=3, subsample="new")
    assert base.classnames == ["class zero", "class one", "class two"] and len(base.test) == 9
    assert new.classnames == ["class three", "class four"] and sorted({d.label for d in new.test}) == [0, 1]
    assert len(new.train_x) == 4 and len(new.val) == 4


def test_few_shot_picks_follow_dassl_sampling(tmp_path):
    split = build(tmp_path, "dtd", "images", "split_zhou_DescribableTextures.json", ("images",))
    random.seed(7)
    with pytest.warns(UserWarning, match="val: 5 class"):
        ds = load("DescribableTextures", tmp_path, num_shots=4, seed=7)
    # Independent re-statement: per label in first-appearance order, random.sample train then val.
    random.seed(7)
    expected = []
    for label in range(5):
        entries = [e[0] for e in split["train"] if e[1] == label]
        expected += random.sample(entries, 4)
    expected_val = []
    for label in range(5):
        entries = [e[0] for e in split["val"] if e[1] == label]
        expected_val += entries  # only 2 val images per class < min(4, 4): kept whole, no RNG used
    assert [os.path.relpath(d.impath, tmp_path / "dtd" / "images") for d in ds.train_x] == expected
    assert [os.path.relpath(d.impath, tmp_path / "dtd" / "images") for d in ds.val] == expected_val


def test_official_cache_is_read(tmp_path):
    build(tmp_path, "eurosat", "2750", "split_zhou_EuroSAT.json", ("2750",))
    image = str(tmp_path / "eurosat" / "2750" / "c1" / "train_0.jpg")
    cache_dir = tmp_path / "eurosat" / "split_fewshot"
    cache_dir.mkdir()
    # Shaped like the official file: a pickled dict of dassl Datum objects, absolute paths.
    data = {"train": [Datum(impath=image, label=1, classname="class one")], "val": [Datum(impath=image, label=1, classname="class one")]}
    with open(cache_dir / "shot_1-seed_2.pkl", "wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    ds = load("EuroSAT", tmp_path, num_shots=1, seed=2)
    assert [d.impath for d in ds.train_x] == [image] and ds.val[0].classname == "class one"


def test_short_classes_warn_by_name(tmp_path):
    build(tmp_path, "food-101", "images", "split_zhou_Food101.json", ("images",))
    with pytest.warns(UserWarning) as record:
        ds = load("Food101", tmp_path, num_shots=8, seed=1)
    messages = [str(w.message) for w in record]
    assert any(re.search(r"Food101 train: 5 class\(es\) have fewer than 8 images.*'class zero' \(5\)", m) for m in messages)
    assert any(re.search(r"Food101 val: 5 class\(es\) have fewer than 4 images.*'class four' \(2\)", m) for m in messages)
    assert len(ds.train_x) == 25  # the official sampler keeps whole smaller groups


def test_missing_dataset_folder_names_path_and_docs(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load("OxfordPets", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "oxford_pets") in message and "docs/DATASETS.md#oxfordpets" in message
    assert not (tmp_path / "oxford_pets").exists()  # nothing created for a missing dataset


def test_missing_split_and_raw_files_are_listed(tmp_path):
    (tmp_path / "oxford_pets" / "images").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError) as info:
        load("OxfordPets", tmp_path)
    message = str(info.value)
    assert "split_zhou_OxfordPets.json" in message and "annotations/trainval.txt" in message


def test_missing_image_folder_is_listed(tmp_path):
    build(tmp_path, "ucf101", "other", "split_zhou_UCF101.json")
    with pytest.raises(DatasetNotFoundError, match="UCF-101-midframes"):
        load("UCF101", tmp_path)


def test_unknown_subsample_lists_choices(tmp_path):
    build(tmp_path, "dtd", "images", "split_zhou_DescribableTextures.json", ("images",))
    with pytest.raises(ValueError, match="'all', 'base', 'new'.*'novel'"):
        load("DescribableTextures", tmp_path, subsample="novel")


def test_official_static_helpers_are_reachable():
    for helper in ("read_split", "save_split", "split_trainval", "subsample_classes"):
        assert callable(getattr(OxfordPets, helper))
    assert callable(DescribableTextures.read_and_split_data)


def test_empty_root_means_data_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    build(tmp_path / "data", "dtd", "images", "split_zhou_DescribableTextures.json", ("images",))
    ds = DATASET_REGISTRY.get("DescribableTextures")(make_cfg(""))
    assert ds.train_x[0].impath.startswith(str(tmp_path / "data" / "dtd" / "images"))
