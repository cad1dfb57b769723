"""The generated `demo` dataset: deterministic bytes, its own RNG, manifest-based regeneration, full pipeline."""
import json
import os
import random

import numpy as np

import datasets  # noqa: F401  (registers every dataset)
from dassl.data.datasets import DATASET_REGISTRY
from datasets import demo, demo_targets
from datasets import world
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
    assert first == second and len(first) == 20 * 90 + 2  # images + split file + manifest
    assert random.getstate() == py_state and (np.random.get_state()[1] == np_state).all()


def test_split_file_is_in_the_official_format(tmp_path):
    demo.generate(str(tmp_path))
    split = json.loads((tmp_path / demo.SPLIT_FILE).read_text())
    assert {k: len(v) for k, v in split.items()} == {"train": 640, "val": 160, "test": 1000}
    assert split["train"][0] == ["circle/train_000.png", 0, "circle"]
    assert split["test"][-1] == ["frame/test_049.png", 19, "frame"]


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


def test_demo_pictures_are_world_scenes_redrawn_in_the_sketch_style():
    # The demo draws a world scene of the class in the photo style and redraws it in the shifted style.
    rng = np.random.default_rng(3)
    scene = world.random_scene(rng, "star", style="photo")
    expected = world.to_uint8(world.shift_style(world.render_float(scene, 32, rng), rng))
    assert np.array_equal(demo.draw("star", np.random.default_rng(3)), expected)


def test_the_sketch_style_keeps_outlines_and_lightens_fills():
    # A large plain black square on white: dark inside in the world, light inside (only a faint trace of the
    # fill) and dark along its outline in the demo's style.
    scene = world.Scene("square", "black", "white", "large", "solid", "in the center")
    picture = world.render_float(scene, 32, np.random.default_rng(0))
    sketch = world.shift_style(picture, np.random.default_rng(1))
    assert picture[16, 16].mean() < 0.2 < 0.5 < sketch[16, 16].mean()
    edge_column = int(np.argmax(np.abs(np.diff(picture[16, :, 0]))))
    assert sketch[16, edge_column:edge_column + 2].mean() < 0.5 * sketch[16, 16].mean()


def test_world_styles_draw_what_their_captions_say():
    # The same large black square on white in each style: a filled photo, an outline drawing (the inside
    # stays background), a painting with soft edges; and the captions of a scene open with its style's words
    # most of the time, never with another style's.
    def draw(style):
        scene = world.Scene("square", "black", "white", "large", "solid", "in the center", style)
        return world.render_float(scene, 32, np.random.default_rng(0))
    photo, drawing, painting = draw("photo"), draw("drawing"), draw("painting")
    assert photo[16, 16].mean() < 0.2 and drawing[16, 16].mean() > 0.8
    edge_column = int(np.argmax(np.abs(np.diff(photo[16, :, 0]))))
    assert drawing[16, edge_column - 1:edge_column + 3].mean(axis=-1).min() < 0.3  # the line
    steepest = lambda picture: np.abs(np.diff(picture[16, :, 0])).max()  # noqa: E731
    assert steepest(painting) < 0.6 * steepest(photo)

    rng = np.random.default_rng(5)
    for style, openings in world.STYLES.items():
        scene = world.random_scene(rng, "circle", style=style)
        captions = [world.caption(scene, rng) for _ in range(200)]
        named = [c for c in captions if any(c.startswith(o + " ") for o in openings)]
        others = [o for other, its in world.STYLES.items() if other != style for o in its]
        assert len(named) > 0.6 * len(captions)
        assert not any(c.startswith(o + " ") for c in captions for o in others)


def test_demo_runs_the_whole_pipeline(tmp_path):
    random.seed(1)
    ds = DATASET_REGISTRY.get("Demo")(make_cfg(tmp_path, num_shots=16, seed=1, subsample="base"))
    assert ds.classnames == list(world.OBJECTS)[:10]
    assert (len(ds.train_x), len(ds.val), len(ds.test)) == (160, 40, 500)
    assert (tmp_path / "demo" / "split_fewshot" / "shot_16-seed_1.pkl").is_file()
    new = DATASET_REGISTRY.get("Demo")(make_cfg(tmp_path, num_shots=16, seed=1, subsample="new"))
    assert new.classnames == list(world.OBJECTS)[10:] and new.num_classes == 10


def load(name, root, **settings):
    cfg = make_cfg(root, num_shots=settings.get("num_shots", -1), seed=1, subsample=settings.get("subsample", "all"))
    cfg.defrost()
    cfg.DATASET.NAME = name
    return DATASET_REGISTRY.get(name)(cfg)


def test_cross_dataset_targets_have_class_sets_of_their_own(tmp_path):
    nature, things, colours = (load(name, tmp_path, num_shots=4) for name in ("DemoNature", "DemoThings", "DemoColours"))
    assert nature.classnames == list(world.NATURE_OBJECTS) and things.classnames == list(world.THING_OBJECTS)
    assert colours.classnames == list(world.COLOURS)
    for dataset in (nature, things, colours):
        assert not set(dataset.classnames) & set(world.OBJECTS)  # no class of the demo's own
        assert len(dataset.train_x) == 4 * len(dataset.classnames) and len(dataset.test) == 50 * len(dataset.classnames)
    # the pre-training world draws every object, the demo's and the targets'
    assert list(world.WORLD_OBJECTS) == [*world.OBJECTS, *world.NATURE_OBJECTS, *world.THING_OBJECTS]


def test_domain_generalisation_targets_are_test_only_variants_of_the_demo_classes(tmp_path):
    photo = load("DemoPhoto", tmp_path, num_shots=4, subsample="base")
    # as the ImageNet variants: every image is train_x and test, no val, no few-shot sampling, no subsampling
    assert photo.classnames == list(world.OBJECTS) and photo.val is None
    assert photo.train_x == photo.test and len(photo.test) == 25 * 20
    mosaic = load("DemoMosaic", tmp_path)
    assert mosaic.classnames == list(world.OBJECTS)[::2] and sorted({d.label for d in mosaic.test}) == list(range(10))
    again = tmp_path / "again"
    demo_targets.DemoMosaic.data.generate(str(again))
    assert all_files(again) == all_files(tmp_path / "demo_mosaic")


def test_the_target_styles_are_what_they_say():
    # the mosaic repeats one colour over each 4x4 tile; the styles of pre-training draw the demo objects
    scene = world.Scene("circle", "red", "white", "large", "solid", "in the center")
    picture = world.render_float(scene, 32, np.random.default_rng(0))
    tiles = world.mosaic(picture)
    assert np.allclose(tiles[4:8, 8:12], tiles[4, 8]) and np.allclose(tiles[:4, :4].mean(axis=(0, 1)),
                                                                      picture[:4, :4].mean(axis=(0, 1)))
    drawing = demo_targets.DemoDrawing.data.draw("circle", np.random.default_rng(1))
    rng = np.random.default_rng(1)
    assert np.array_equal(drawing, world.render(world.random_scene(rng, "circle", style="drawing"), 32, rng))
    assert drawing.mean() > 150  # an outline on a light ground
