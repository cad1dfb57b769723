"""With the shipped demo backbone the methods learn, and a change that stops them learning fails here.

Zero-shot CLIP is well above chance on the demo's shifted pictures, and a MaPLe run (16 shots, the demo
config) raises the base accuracy over it by a clear margin. Deterministic on CPU: seeded, and the margins
leave room for rounding.
"""
import pytest

from datasets import world
from trainers_testutils import demo_trainer

CHANCE = 100 / 10  # ten classes in each half
EPOCHS = "10"  # the demo config's own


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("demo_data"))


def short_run(trainer: str, config: str, root: str, output_dir: str, *opts: str):
    """A trainer on the demo's base classes with 16 shots and EPOCHS epochs of its demo config."""
    return demo_trainer(trainer, config, root, output_dir, "DATASET.NUM_SHOTS", "16", "OPTIM.MAX_EPOCH", EPOCHS,
                        *opts)


@pytest.fixture(scope="module")
def zero_shot_base(data_root, tmp_path_factory):
    trainer = short_run("ZeroshotCLIP", "CoOp/demo.yaml", data_root, str(tmp_path_factory.mktemp("zs")))
    return trainer.test()


@pytest.fixture(scope="module")
def maple_run(data_root, tmp_path_factory):
    trainer = short_run("MaPLe", "MaPLe/demo.yaml", data_root, str(tmp_path_factory.mktemp("maple")))
    trainer.train()
    return trainer.test()


def test_zero_shot_clip_is_far_above_chance_and_far_from_perfect(zero_shot_base):
    assert 2.5 * CHANCE <= zero_shot_base <= 85


def test_zero_shot_clip_on_the_novel_classes(data_root, tmp_path):
    trainer = short_run("ZeroshotCLIP", "CoOp/demo.yaml", data_root, str(tmp_path), "DATASET.SUBSAMPLE_CLASSES",
                        "new")
    assert trainer.dm.dataset.classnames == list(world.OBJECTS)[10:]
    assert 2.5 * CHANCE <= trainer.test() <= 85


def test_maple_learns_the_shift(maple_run, zero_shot_base):
    assert maple_run >= zero_shot_base + 6
