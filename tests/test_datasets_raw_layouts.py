"""Building the split from the raw annotations when the split file is missing (and writing it), plus the
datasets without a split JSON: FGVCAircraft, ImageNet and its test-only variants."""
import json
import os
import random

import numpy as np
import pytest
from scipy.io import savemat

import datasets  # noqa: F401  (registers every dataset)
from dassl.data.datasets import DATASET_REGISTRY
from datasets.atomic import read_pickle
from tests.datasets_testutils import make_cfg, write_classnames, write_folder_tree, write_image, write_lines


def load(name, root, **kw):
    return DATASET_REGISTRY.get(name)(make_cfg(root, **kw))


def rebuild_is_deterministic(name, root, split_path):
    """Same seed -> the same split file when it is rebuilt."""
    with open(split_path) as f:
        first = json.load(f)
    os.remove(split_path)
    random.seed(0)
    load(name, root)
    with open(split_path) as f:
        return json.load(f) == first


def test_oxford_pets_from_annotations(tmp_path):
    d = tmp_path / "oxford_pets"
    lines = []
    for label, breed in enumerate(["Abyssinian", "american_bulldog"], start=1):
        for i in range(1, 11):
            write_image(str(d / "images" / f"{breed}_{i}.jpg"), i)
            lines.append(f"{breed}_{i} {label} 1 {i}")
    write_lines(str(d / "annotations" / "trainval.txt"), lines)
    write_lines(str(d / "annotations" / "test.txt"), lines[:3])
    random.seed(0)
    ds = load("OxfordPets", tmp_path)
    assert ds.classnames == ["abyssinian", "american_bulldog"]
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (16, 4, 3)  # round(10 * 0.2) = 2 val per class
    split_path = d / "split_zhou_OxfordPets.json"
    assert json.loads(split_path.read_text())["test"][0] == ["Abyssinian_1.jpg", 0, "abyssinian"]
    assert rebuild_is_deterministic("OxfordPets", tmp_path, split_path)


def test_stanford_cars_from_mat_files(tmp_path):
    d = tmp_path / "stanford_cars"
    names = np.empty((1, 2), dtype=object)
    names[0, 0], names[0, 1] = "AM General Hummer SUV 2000", "Tesla Model S Sedan 2012"

    def annotations(n, folder):
        annos = np.zeros((1, n), dtype=[("fname", object), ("class", object)])
        for i in range(n):
            fname = f"{i:05d}.jpg"
            write_image(str(d / folder / fname), i)
            annos[0, i]["fname"] = fname
            annos[0, i]["class"] = np.array([[i % 2 + 1]], dtype=np.uint8)
        return {"annotations": annos}

    (d / "devkit").mkdir(parents=True)
    savemat(str(d / "devkit" / "cars_meta.mat"), {"class_names": names})
    savemat(str(d / "devkit" / "cars_train_annos.mat"), annotations(10, "cars_train"))
    savemat(str(d / "cars_test_annos_withlabels.mat"), annotations(4, "cars_test"))
    random.seed(0)
    ds = load("StanfordCars", tmp_path)
    assert ds.classnames == ["2000 AM General Hummer SUV", "2012 Tesla Model S Sedan"]
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (8, 2, 4)
    assert ds.test[0].impath == str(d / "cars_test" / "00000.jpg")
    split = json.loads((d / "split_zhou_StanfordCars.json").read_text())
    assert split["test"][0] == ["cars_test/00000.jpg", 0, "2000 AM General Hummer SUV"]


def test_oxford_flowers_from_mat_file(tmp_path):
    d = tmp_path / "oxford_flowers"
    labels = [1, 2] * 10
    for i in range(len(labels)):
        write_image(str(d / "jpg" / f"image_{i + 1:05d}.jpg"), i)
    savemat(str(d / "imagelabels.mat"), {"labels": np.array([labels])})
    (d / "cat_to_name.json").write_text(json.dumps({"1": "pink primrose", "2": "hard-leaved pocket orchid"}))
    random.seed(0)
    ds = load("OxfordFlowers", tmp_path)
    assert ds.classnames == ["pink primrose", "hard-leaved pocket orchid"]
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (10, 4, 6)  # 50/20/30 of 10 per class
    assert {d_.impath for d_ in ds.train_x if d_.label == 0} <= {str(d / "jpg" / f"image_{i:05d}.jpg") for i in range(1, 21, 2)}


def test_sun397_from_text_files(tmp_path):
    d = tmp_path / "sun397"
    classes = ["/a/abbey", "/a/apartment_building/outdoor"]
    write_lines(str(d / "ClassName.txt"), classes)
    lines = []
    for c in classes:
        for i in range(5):
            write_image(str(d / "SUN397" / c[1:] / f"sun_{i}.jpg"), i)
            lines.append(f"{c}/sun_{i}.jpg")
    write_lines(str(d / "Training_01.txt"), lines)
    write_lines(str(d / "Testing_01.txt"), lines[:2] + lines[5:7])
    random.seed(0)
    ds = load("SUN397", tmp_path)
    assert ds.classnames == ["abbey", "outdoor apartment_building"]
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (8, 2, 4)


def test_ucf101_from_text_files(tmp_path):
    d = tmp_path / "ucf101"
    write_lines(str(d / "ucfTrainTestlist" / "classInd.txt"), ["1 ApplyEyeMakeup", "2 YoYo"])
    lines = []
    for label, (action, folder) in enumerate([("ApplyEyeMakeup", "Apply_Eye_Makeup"), ("YoYo", "Yo_Yo")], start=1):
        for i in range(5):
            write_image(str(d / "UCF-101-midframes" / folder / f"v_{action}_g0{i}_c01.jpg"), i)
            lines.append(f"{action}/v_{action}_g0{i}_c01.avi {label}")
    write_lines(str(d / "ucfTrainTestlist" / "trainlist01.txt"), lines)
    write_lines(str(d / "ucfTrainTestlist" / "testlist01.txt"), [line.split(" ")[0] for line in lines[:1]])
    random.seed(0)
    ds = load("UCF101", tmp_path)
    assert ds.classnames == ["Apply_Eye_Makeup", "Yo_Yo"]
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (8, 2, 1)
    assert ds.test[0].impath == str(d / "UCF-101-midframes" / "Apply_Eye_Makeup" / "v_ApplyEyeMakeup_g00_c01.jpg")


def test_caltech101_ignores_and_renames_folders(tmp_path):
    image_dir = tmp_path / "caltech-101" / "101_ObjectCategories"
    write_folder_tree(str(image_dir), {"BACKGROUND_Google": 10, "Faces": 10, "Faces_easy": 10, "accordion": 10, "airplanes": 7})
    random.seed(0)
    ds = load("Caltech101", tmp_path)
    assert ds.classnames == ["face", "accordion", "airplane"]  # sorted folders: Faces < accordion < airplanes
    # 50/20/30 with round(): 10 -> 5/2/3, 7 -> 4/1/2 (round(3.5) = 4)
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (14, 5, 8)
    split_path = tmp_path / "caltech-101" / "split_zhou_Caltech101.json"
    assert rebuild_is_deterministic("Caltech101", tmp_path, split_path)


@pytest.mark.parametrize(
    "name,folder,image_dir,expected",
    [
        ("EuroSAT", "eurosat", "2750", ["Annual Crop Land", "Sea or Lake"]),
        ("DescribableTextures", "dtd", "images", ["AnnualCrop", "SeaLake"]),
        ("Food101", "food-101", "images", ["AnnualCrop", "SeaLake"]),
    ],
)
def test_folder_datasets_build_their_split(tmp_path, name, folder, image_dir, expected):
    write_folder_tree(str(tmp_path / folder / image_dir), {"SeaLake": 4, "AnnualCrop": 10})
    random.seed(0)
    ds = load(name, tmp_path)
    assert ds.classnames == expected
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (7, 3, 4)  # 4 -> 2/1/1, 10 -> 5/2/3


def test_too_small_class_cannot_be_split(tmp_path):
    write_folder_tree(str(tmp_path / "dtd" / "images"), {"banded": 3})
    with pytest.raises(ValueError, match="banded.*3 image"):
        load("DescribableTextures", tmp_path)


def test_fgvc_aircraft_reads_official_lists(tmp_path):
    d = tmp_path / "fgvc_aircraft"
    write_lines(str(d / "variants.txt"), ["707-320", "A300B4", "Cessna 172"])
    for split, ids in {"train": ["0001", "0002", "0003"], "val": ["0004"], "test": ["0005", "0006"]}.items():
        lines = [f"{i} {['707-320', 'A300B4', 'Cessna 172'][int(i) % 3]}" for i in ids]
        write_lines(str(d / f"images_variant_{split}.txt"), lines)
        for i in ids:
            write_image(str(d / "images" / f"{i}.jpg"), int(i))
    ds = load("FGVCAircraft", tmp_path, subsample="base")  # 3 classes -> base = 2
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (2, 1, 1)  # ids mod 3 pick the variant
    assert ds.classnames == ["707-320", "A300B4"]
    assert ds.test[0].impath == str(d / "images" / "0006.jpg")


def make_imagenet(root, wnids, per_class=3):
    d = root / "imagenet"
    write_classnames(str(d / "classnames.txt"), {w: f"name {w}" for w in wnids})
    for split in ("train", "val"):
        write_folder_tree(str(d / "images" / split), {w: per_class for w in wnids})
    return d


def test_imagenet_preprocessed_cache_and_val_is_test(tmp_path):
    d = make_imagenet(tmp_path, ["n02", "n01", "n03", "n04"])
    ds = load("ImageNet", tmp_path)
    assert ds.classnames == ["name n01", "name n02", "name n03", "name n04"]  # sorted wnid folders
    assert ds.val is ds.test and len(ds.test) == 12
    assert set(read_pickle(str(d / "preprocessed.pkl"))) == {"train", "test"}

    random.seed(1)
    few = load("ImageNet", tmp_path, num_shots=2, seed=1, subsample="new")
    assert set(read_pickle(str(d / "split_fewshot" / "shot_2-seed_1.pkl"))) == {"train"}
    assert few.classnames == ["name n03", "name n04"] and len(few.train_x) == 4 and len(few.test) == 6
    assert few.val is few.test


def test_imagenet_unknown_wnid_names_classnames_file(tmp_path):
    d = make_imagenet(tmp_path, ["n01"])
    write_folder_tree(str(d / "images" / "train"), {"n09": 1})
    with pytest.raises(KeyError, match="n09.*classnames.txt"):
        load("ImageNet", tmp_path)


@pytest.mark.parametrize(
    "name,folder,image_dir",
    [("ImageNetSketch", "imagenet-sketch", "images"), ("ImageNetA", "imagenet-adversarial", "imagenet-a"), ("ImageNetR", "imagenet-rendition", "imagenet-r")],
)
def test_imagenet_variants(tmp_path, name, folder, image_dir):
    d = tmp_path / folder
    write_classnames(str(d / "classnames.txt"), {"n01": "tench", "n02": "goldfish", "n03": "shark"})
    write_folder_tree(str(d / image_dir), {"n03": 2, "n02": 1})
    if name != "ImageNetSketch":
        (d / image_dir / "README.txt").write_text("readme")  # shipped with -A and -R; not a class
    ds = load(name, tmp_path, subsample="new")  # ignored for test-only datasets, as officially
    assert ds.classnames == ["goldfish", "shark"] and ds.train_x is ds.test and ds.val is None
    assert len(ds.test) == 3 and not (d / "split_fewshot").exists()


def test_imagenetv2_folders_are_label_indices(tmp_path):
    d = tmp_path / "imagenetv2"
    write_classnames(str(d / "classnames.txt"), {f"n{i:04d}": f"class {i}" for i in range(1000)})
    image_dir = d / "imagenetv2-matched-frequency-format-val"
    for i in range(1000):
        (image_dir / str(i)).mkdir(parents=True)
    write_image(str(image_dir / "0" / "a.jpeg"))
    write_image(str(image_dir / "999" / "b.jpeg"))
    ds = load("ImageNetV2", tmp_path)
    assert [(x.label, x.classname) for x in ds.test] == [(0, "class 0"), (999, "class 999")]


def test_variant_missing_classnames_file(tmp_path):
    (tmp_path / "imagenet-rendition" / "imagenet-r").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"classnames.txt(.|\n)*DATASETS.md#imagenetr"):
        load("ImageNetR", tmp_path)
