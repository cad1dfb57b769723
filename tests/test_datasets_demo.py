"""The generated `demo` dataset: deterministic bytes, its own RNG, manifest-based regeneration, full pipeline."""
import json
import os
import random

import numpy as np

import datasets  # noqa: F401  (registers every dataset)
from dassl.data.datasets import DATASET_REGISTRY
from datasets import demo
from datasets.shapes import SHAPES, draw
from tests.datasets_testutils import make_cfg


def all_files(folder):
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def test_generation_is_byte_identical_and_leaves_global_rngs_alone(tmp_path):
    random.seed(5)
    np.random.seed(5)
    py_state, np_state = random.getstate(), np.random.get_state()[1].copy()
    demo.generate(str(tmp_path / "a"))
    demo.generate(str(tmp_path / "b"))
    first, second = all_files(tmp_path / "a"), all_files(tmp_path / "b")
    assert first == second and len(first) == 12 * 48 + 2  # images + split file + manifest
    assert random.getstate() == py_state and (np.random.get_state()[1] == np_state).all()


def test_split_file_is_in_the_official_format(tmp_path):
    demo.generate(str(tmp_path))
    split = json.loads((tmp_path / demo.SPLIT_FILE).read_text())
    assert {k: len(v) for k, v in split.items()} == {"train": 240, "val": 96, "test": 240}
    assert split["train"][0] == ["circle/train_000.png", 0, "circle"]
    assert split["test"][-1] == ["diagonal_stripes/test_019.png", 11, "diagonal stripes"]


def test_intact_copy_is_kept_and_damaged_copy_regenerated(tmp_path):
    demo.ensure_demo_data(str(tmp_path))
    image = tmp_path / "images" / "star" / "val_003.png"
    original = image.read_bytes()
    stamp = image.stat().st_mtime_ns
    demo.ensure_demo_data(str(tmp_path))
    assert image.stat().st_mtime_ns == stamp  # intact: not rewritten

    image.write_bytes(b"broken")
    assert not demo.is_intact(str(tmp_path))
    demo.ensure_demo_data(str(tmp_path))
    assert image.read_bytes() == original

    (tmp_path / demo.MANIFEST).unlink()
    assert not demo.is_intact(str(tmp_path))


def test_classes_look_different():
    # Mean absolute difference between the average images of two classes is far from zero.
    means = {}
    for label, name in enumerate(SHAPES):
        images = [draw(name, demo.IMAGE_SIZE, np.random.default_rng([1, label, i])) for i in range(8)]
        means[name] = np.mean([np.abs(np.diff(im.astype(float), axis=0)).mean() for im in images])
    # Stripes along x have no vertical change at all; horizontal stripes have a lot.
    assert means["vertical stripes"] < 0.5 * means["horizontal stripes"]


def test_demo_runs_the_whole_pipeline(tmp_path):
    random.seed(1)
    ds = DATASET_REGISTRY.get("Demo")(make_cfg(tmp_path, num_shots=16, seed=1, subsample="base"))
    assert ds.classnames == list(SHAPES)[:6]
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (96, 24, 120)
    assert (tmp_path / "demo" / "split_fewshot" / "shot_16-seed_1.pkl").is_file()
    new = DATASET_REGISTRY.get("Demo")(make_cfg(tmp_path, num_shots=16, seed=1, subsample="new"))
    assert new.classnames == list(SHAPES)[6:] and new.num_classes == 6
