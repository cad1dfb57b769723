"""Datum / DatasetBase (few-shot sampling, pickles), image reading, transforms, DatasetWrapper, DataManager."""
import pickle
import random

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from dassl.config import get_cfg_default
from dassl.data import DatasetWrapper
from dassl.data.datasets import DatasetBase, Datum
from dassl.data.transforms import build_transform
from dassl.utils import read_image
from dassl_testutils import shuffled_labels, write_image_files

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@pytest.fixture
def source(tmp_path):
    """37 Datums over 5 labels in shuffled order (label 4 has fewer items than 8)."""
    paths = write_image_files(str(tmp_path / "imgs"), 37)
    labels = shuffled_labels(37, 5, seed=3)
    labels = [l if l != 4 or i < 20 else 0 for i, l in enumerate(labels)]  # make label 4 small
    return [Datum(impath=p, label=l, classname=f"c{l}") for p, l in zip(paths, labels)]


def expected_fewshot(source, k, seed, repeat=False):
    """Independent reference: labels in first-appearance order, random.sample per label."""
    random.seed(seed)
    order = []
    for d in source:
        if d.label not in order:
            order.append(d.label)
    picked = []
    for label in order:
        group = [d for d in source if d.label == label]
        if len(group) >= k:
            picked += random.sample(group, k)
        elif repeat:
            picked += random.choices(group, k=k)
        else:
            picked += group
    return [d.impath for d in picked]


@pytest.mark.parametrize("k,seed", [(1, 1), (4, 2), (8, 3)])
def test_fewshot_matches_reference_picks(source, k, seed):
    ds = DatasetBase(train_x=source)
    random.seed(seed)
    got = ds.generate_fewshot_dataset(source, num_shots=k)
    assert [d.impath for d in got] == expected_fewshot(source, k, seed)


def test_fewshot_train_then_val_draws_in_sequence(source):
    # the dataset modules sample train, then val (min(K, 4) shots) from one seeded RNG stream
    ds = DatasetBase(train_x=source)
    random.seed(5)
    train = ds.generate_fewshot_dataset(source, num_shots=8)
    val = ds.generate_fewshot_dataset(source[::-1], num_shots=4)
    random.seed(5)
    stream = []
    for src, k in ((source, 8), (source[::-1], 4)):
        order = list(dict.fromkeys(d.label for d in src))
        for label in order:
            group = [d for d in src if d.label == label]
            stream += [d.impath for d in (random.sample(group, k) if len(group) >= k else group)]
    assert [d.impath for d in train + val] == stream


def test_fewshot_repeat_multiple_sources_and_disabled(source):
    ds = DatasetBase(train_x=source)
    random.seed(0)
    a, b = ds.generate_fewshot_dataset(source, source, num_shots=8, repeat=True)
    random.seed(0)
    ref = expected_fewshot(source, 8, 0, repeat=True)
    assert [d.impath for d in a] == ref
    assert len(b) == 8 * 5
    assert ds.generate_fewshot_dataset(source, num_shots=-1) is source


def test_datasetbase_classes_from_train_x(source):
    ds = DatasetBase(train_x=source, test=source[:3])
    assert ds.num_classes == 5
    assert ds.lab2cname == {i: f"c{i}" for i in range(5)}
    assert ds.classnames == [f"c{i}" for i in range(5)]
    split = ds.split_dataset_by_label(source)
    assert list(split) == list(dict.fromkeys(d.label for d in source))


def test_datum_pickle_path_and_attributes(source, tmp_path):
    data = pickle.dumps(source[0])
    assert b"dassl.data.datasets.base_dataset" in data and b"Datum" in data
    for name in (b"_impath", b"_label", b"_domain", b"_classname"):
        assert name in data
    # an official cache: instances restored from their dict, __init__ not called
    restored = pickle.loads(data)
    assert (restored.impath, restored.label, restored.classname) == (source[0].impath, source[0].label, source[0].classname)
    with pytest.warns(UserWarning, match="No file found"), pytest.raises(FileNotFoundError, match="missing.png"):
        Datum(impath=str(tmp_path / "missing.png"))


def test_read_image_converts_modes_and_names_bad_files(tmp_path):
    grey = tmp_path / "grey.png"
    Image.new("L", (5, 4), 100).save(grey)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (5, 4), (10, 20, 30, 0)).save(rgba)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (5, 4), (0, 0, 0, 0)).save(cmyk)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16)).save(deep)
    for path in (grey, rgba, cmyk, deep):
        img = read_image(str(path))
        assert img.mode == "RGB" and img.size == (5, 4)
    assert read_image(str(grey)).getpixel((0, 0)) == (100, 100, 100)
    assert read_image(str(deep)).getpixel((0, 0)) == (255, 255, 255)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(OSError, match="broken.jpg"):
        read_image(str(broken))


def _method_cfg():
    cfg = get_cfg_default()
    cfg.INPUT.TRANSFORMS = ("normalize", "random_flip", "random_resized_crop")  # order must not matter
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.PIXEL_MEAN = CLIP_MEAN
    cfg.INPUT.PIXEL_STD = CLIP_STD
    cfg.INPUT.SIZE = (32, 32)
    return cfg


def _image():
    rng = np.random.RandomState(0)
    return Image.fromarray(rng.randint(0, 255, (45, 60, 3), dtype=np.uint8))


def test_train_transform_equals_torchvision_composition():
    tfm = build_transform(_method_cfg(), is_train=True)
    reference = T.Compose(
        [
            T.RandomResizedCrop((32, 32), scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    img = _image()
    for seed in range(4):
        torch.manual_seed(seed)
        ours = tfm(img)
        torch.manual_seed(seed)
        assert torch.equal(ours, reference(img))


def test_test_transform_equals_torchvision_composition():
    tfm = build_transform(_method_cfg(), is_train=False)
    reference = T.Compose(
        [
            T.Resize(32, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop((32, 32)),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    img = _image()
    assert torch.equal(tfm(img), reference(img))


def test_train_transform_without_crop_resizes_and_rejects_unknown():
    cfg = _method_cfg()
    cfg.INPUT.TRANSFORMS = ("random_flip",)
    tfm = build_transform(cfg, is_train=True)
    reference = T.Compose([T.Resize((32, 32), interpolation=T.InterpolationMode.BICUBIC), T.RandomHorizontalFlip(), T.ToTensor()])
    img = _image()
    torch.manual_seed(1)
    ours = tfm(img)
    torch.manual_seed(1)
    assert torch.equal(ours, reference(img))
    cfg.INPUT.TRANSFORMS = ("random_flipp",)
    with pytest.raises(ValueError, match="random_flipp.*valid choices"):
        build_transform(cfg, is_train=True)


def test_dataset_wrapper_items_and_corrupt_image_named(tmp_path):
    cfg = _method_cfg()
    paths = write_image_files(str(tmp_path / "ok"), 2)
    items = [Datum(impath=p, label=i, domain=0, classname=f"c{i}") for i, p in enumerate(paths)]
    bad = tmp_path / "ok" / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    items.append(Datum(impath=str(bad), label=0, classname="c0"))
    wrapper = DatasetWrapper(cfg, items, transform=build_transform(cfg, is_train=False))
    out = wrapper[1]
    assert out["label"] == 1 and out["index"] == 1 and out["impath"] == paths[1]
    assert out["img"].shape == (3, 32, 32)
    with pytest.raises(OSError, match="bad.png"):
        wrapper[2]
