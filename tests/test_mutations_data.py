"""Guards against plausible one-line bugs in the data pipeline that the rest of the suite let through:
few-shot sampling of classes with exactly K images, the min(K, 4)-shot validation split, and the loaders
(train: shuffled, incomplete last batch dropped, train augmentation; test: every item once, in order, the
deterministic test transform)."""
import random

import pytest
import torch

import dassl_e2e_plugin  # noqa: F401  (registers the TinyColors dataset)
import datasets  # noqa: F401  (registers every benchmark dataset)
from dassl.config import get_cfg_default
from dassl.data import DataManager
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum
from dassl.utils import read_image
from dassl_testutils import make_color_dataset, write_image_files
from datasets_testutils import make_cfg, write_json_split


def reference_fewshot(source, k):
    """Dassl: labels in order of first appearance; >= k items -> random.sample(items, k), else all items."""
    groups = {}
    for item in source:
        groups.setdefault(item.label, []).append(item)
    picked = []
    for items in groups.values():
        picked.extend(random.sample(items, k) if len(items) >= k else items)
    return picked


def test_fewshot_samples_a_class_with_exactly_k_items(tmp_path):
    """A class with exactly K items is sampled too (random.sample reorders it and consumes the RNG)."""
    counts = {0: 4, 1: 6, 2: 4, 3: 3, 4: 4}
    labels = [label for label, n in counts.items() for _ in range(n)]
    random.Random(0).shuffle(labels)
    paths = write_image_files(str(tmp_path / "imgs"), len(labels))
    source = [Datum(impath=p, label=l, classname=f"c{l}") for p, l in zip(paths, labels)]
    dataset = DatasetBase(train_x=source)
    for seed in range(3):
        random.seed(seed)
        got = dataset.generate_fewshot_dataset(source, num_shots=4)
        random.seed(seed)
        expected = reference_fewshot(source, 4)
        assert [d.impath for d in got] == [d.impath for d in expected]
    random.seed(5)
    dataset.generate_fewshot_dataset(source, num_shots=4)
    after_ours = random.random()
    random.seed(5)
    reference_fewshot(source, 4)
    assert after_ours == random.random()  # the same number of draws


CLASSES = [(f"f{i}", f"class {i}") for i in range(5)]


def test_benchmark_few_shot_val_takes_min_k_4_shots_then_subsamples(tmp_path):
    """Benchmark datasets: train K shots then val min(K, 4) shots from one RNG stream, before base/new
    subsampling (base = first ceil(n/2) labels, new = the rest, both relabelled from 0)."""
    (tmp_path / "oxford_pets").mkdir()
    split = write_json_split(str(tmp_path / "oxford_pets"), "images", "split_zhou_OxfordPets.json", CLASSES,
                             sizes={"train": 10, "val": 6, "test": 3})
    random.seed(2)
    ds = DATASET_REGISTRY.get("OxfordPets")(make_cfg(tmp_path, num_shots=8, seed=2))
    assert len(ds.train_x) == 5 * 8 and len(ds.val) == 5 * 4

    prefix = str(tmp_path / "oxford_pets" / "images")

    def as_data(entries):
        return [Datum(impath=f"{prefix}/{rel}", label=label, classname=name) for rel, label, name in entries]
    random.seed(2)
    train = reference_fewshot(as_data(split["train"]), 8)
    val = reference_fewshot(as_data(split["val"]), 4)
    assert [d.impath for d in ds.train_x] == [d.impath for d in train]
    assert [d.impath for d in ds.val] == [d.impath for d in val]

    new = DATASET_REGISTRY.get("OxfordPets")(make_cfg(tmp_path, num_shots=8, seed=2, subsample="new"))
    assert new.classnames == ["class 3", "class 4"]
    assert [(d.impath, d.label) for d in new.val] == [(d.impath, d.label - 3) for d in val if d.label >= 3]


@pytest.fixture(scope="module")
def colors_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("colors"))
    make_color_dataset(root, per_class=8, size=10)  # 12 train and 12 test images
    return root


def colors_cfg(root):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = root
    cfg.DATASET.NAME = "TinyColors"
    cfg.INPUT.SIZE = (8, 8)
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 5
    cfg.DATALOADER.TEST.BATCH_SIZE = 5
    return cfg


def test_loaders_batches_order_and_transforms(colors_root):
    dm = DataManager(colors_cfg(colors_root))
    n_train, n_test = len(dm.dataset.train_x), len(dm.dataset.test)
    assert (n_train, n_test) == (12, 12)

    # train: floor(12 / 5) = 2 full batches (incomplete last batch dropped), reshuffled from the torch RNG
    assert dm.train_loader_x.dataset.transform is dm.tfm_train
    torch.manual_seed(0)
    batches = list(dm.train_loader_x)
    assert [len(b["index"]) for b in batches] == [5, 5]
    order = torch.cat([b["index"] for b in batches]).tolist()
    assert len(set(order)) == 10 and order != sorted(order)

    # test: every item once, in dataset order, with the deterministic test transform
    assert dm.test_loader.dataset.transform is dm.tfm_test
    first, second = list(dm.test_loader), list(dm.test_loader)
    assert [len(b["index"]) for b in first] == [5, 5, 2]
    assert torch.cat([b["index"] for b in first]).tolist() == list(range(n_test))
    assert torch.cat([b["label"] for b in first]).tolist() == [d.label for d in dm.dataset.test]
    for a, b in zip(first, second):
        assert torch.equal(a["img"], b["img"])
    expected = dm.tfm_test(read_image(dm.dataset.test[7].impath))
    assert torch.equal(first[1]["img"][2], expected)
