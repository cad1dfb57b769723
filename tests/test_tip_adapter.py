"""Tip-Adapter and Tip-Adapter-F (trainers/tip_adapter.py) against an implementation written the official way
(tests/official_style_tip_adapter.py): the same cache keys from the same augmented passes, the same searched
(beta, alpha), the same Tip-Adapter-F losses and keys step by step (fp32, within 5e-6); the search's known
answers; classes without cache entries scored by zero-shot CLIP alone; every precision; bad settings."""
import os

import pytest
import torch
import torch.nn.functional as F

import official_style_tip_adapter as official
from dassl.data.data_manager import build_data_loader
from dassl.engine import plugins
from dassl.utils import load_checkpoint
from trainers.method import trained_parameter_count
from trainers.tip_adapter import CLIP_LOGIT_SCALE, CacheModel, search_alpha_beta, search_grid, tip_logits
from trainers_testutils import clip_state, demo_trainer, same_tensors


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def _official_cfg(trainer) -> dict:
    node = trainer.cfg.TRAINER.TIP_ADAPTER
    return {"augment_epoch": node.AUGMENT_EPOCH, "search_scale": list(node.SEARCH_SCALE),
            "search_step": list(node.SEARCH_STEP), "init_alpha": node.INIT_ALPHA, "init_beta": node.INIT_BETA,
            "lr": trainer.cfg.OPTIM.LR, "train_epoch": trainer.cfg.OPTIM.MAX_EPOCH}


class _Pairs:
    """A Dassl loader seen as the official loaders are: (images, target) pairs."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        for batch in self.loader:
            yield batch["img"], batch["label"]


def _official_cache(trainer, seed):
    loader = build_data_loader(trainer.cfg, "SequentialSampler", trainer.dm.dataset.train_x,
                               trainer.cfg.DATALOADER.TRAIN_X.BATCH_SIZE, tfm=trainer.dm.tfm_train, is_train=False)
    torch.manual_seed(seed)
    with plugins.cuda_calls_kept_on_cpu(True):
        return official.build_cache_model(_official_cfg(trainer), trainer.model.clip_model, _Pairs(loader))


def test_cache_keys_and_search_are_the_official_ones(data_root, tmp_path):
    trainer = demo_trainer("TipAdapter", "TipAdapter/tiny.yaml", data_root, str(tmp_path), "DATASET.NUM_SHOTS", "4")
    torch.manual_seed(3)
    trainer.build_cache()
    keys, values = _official_cache(trainer, seed=3)
    cache = trainer.model.cache_model
    torch.testing.assert_close(cache.keys.detach(), keys.t(), rtol=0, atol=1e-6)
    assert torch.equal(cache.values, values)

    features, labels = trainer.validation_features()
    text, _ = trainer.model.class_side()
    node = trainer.cfg.TRAINER.TIP_ADAPTER
    beta, alpha, _ = search_alpha_beta(features, labels, text, cache.keys.detach(), cache.values,
                                       node.SEARCH_SCALE, node.SEARCH_STEP)
    assert (beta, alpha) == official.search_hp(_official_cfg(trainer), keys, values, features, labels, text.t())


def test_the_search_agrees_on_features_with_a_spread_of_answers():
    torch.manual_seed(0)
    classes, dim = 5, 16
    text = F.normalize(torch.randn(classes, dim), dim=-1)
    keys = F.normalize(torch.randn(40, dim), dim=-1)
    key_labels = torch.arange(40) % classes
    values = F.one_hot(key_labels, classes).float()
    cfg = {"search_scale": [7, 3], "search_step": [50, 10]}
    for trial in range(4):
        labels = torch.randint(classes, (60,))
        # validation features near the keys of their class: the cache helps, by an amount the grid must find
        features = F.normalize(keys[labels * 0 + torch.randint(8, (60,)) * classes + labels] * (0.3 + 0.2 * trial)
                               + torch.randn(60, dim) * 0.1, dim=-1)
        ours = search_alpha_beta(features, labels, text, keys, values, cfg["search_scale"], cfg["search_step"])
        assert ours[:2] == official.search_hp(cfg, keys.t(), values, features, labels, text.t())


def test_the_search_keeps_the_first_best_setting():
    """Zero-shot logits all 0 (text orthogonal to the features) and each validation image on its class's key:
    every (beta, alpha) of the grid is 100% right, so the answer is the first one, (0.1, 0.1)."""
    eye = torch.eye(4)
    keys, values, text = eye[:2], torch.eye(2), eye[2:]
    beta, alpha, accuracy = search_alpha_beta(eye[:2], torch.tensor([0, 1]), text, keys, values, [7, 3], [200, 20])
    assert (beta, alpha, accuracy) == (0.1, 0.1, 100.0)
    assert search_grid(7, 200)[:2] == [0.1, 0.1 + 6.9 / 200] and len(search_grid(3, 20)) == 20


def test_logits_are_zero_shot_plus_the_cache_and_unknown_classes_get_no_cache_logits():
    torch.manual_seed(1)
    features, text = F.normalize(torch.randn(3, 8), dim=-1), F.normalize(torch.randn(3, 8), dim=-1)
    cache = CacheModel(torch.tensor([0, 1, 2, 0]), ["a", "b", "c"], 8, alpha=2.0, beta=5.0)
    cache.keys.data.copy_(F.normalize(torch.randn(4, 8), dim=-1))
    zero_shot = CLIP_LOGIT_SCALE * features @ text.t()
    expected = zero_shot + 2.0 * torch.exp(-5.0 * (1 - features @ cache.keys.t())) @ cache.values
    torch.testing.assert_close(tip_logits(features, text, cache.keys, cache.values, 2.0, 5.0), expected)
    cache.set_classes(["c", "novel", "a"])  # another class list: "b" is not scored, "novel" has no entry
    assert cache.values.tolist() == [[0, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 1]]
    cache.set_classes(["x", "y", "z"])
    torch.testing.assert_close(tip_logits(features, text, cache.keys, cache.values, 2.0, 5.0), zero_shot)


def test_tip_adapter_f_steps_are_the_official_ones(data_root, tmp_path):
    trainer = demo_trainer("TipAdapterF", "TipAdapterF/tiny.yaml", data_root, str(tmp_path), "DATASET.NUM_SHOTS", "4",
                           "OPTIM.LR", "0.05")
    torch.manual_seed(5)
    trainer.build_cache()
    cache = trainer.model.cache_model
    text, _ = trainer.model.class_side()
    initial = cache.keys.detach().clone()
    trainer.set_model_mode("train")
    with plugins.cuda_calls_kept_on_cpu(True):
        reference = official.TipAdapterF(_official_cfg(trainer), initial.t().clone(), cache.values,
                                         text.detach().t(), trainer.model.clip_model, len(trainer.train_loader_x))
        for step, batch in enumerate(list(trainer.train_loader_x)[:3]):
            trainer.batch_idx, trainer.num_batches = step, len(trainer.train_loader_x)
            ours = float(trainer.forward_backward(batch)["loss"])
            theirs = reference.step(batch["img"], batch["label"])
            assert abs(ours - theirs) <= 5e-6 * max(1.0, abs(theirs)), f"loss of step {step + 1}"
            torch.testing.assert_close(cache.keys.detach(), reference.adapter.weight.detach(), rtol=5e-6, atol=5e-6)
            assert trainer.sched.get_last_lr() == reference.scheduler.get_last_lr()
    assert not torch.allclose(cache.keys.detach(), initial, atol=1e-3)


# fp16, where fp32 keys built from a half-precision CLIP can go wrong; every declared precision takes a step in
# tests/test_registered_trainers.py
@pytest.mark.parametrize("name", ["TipAdapter", "TipAdapterF"])
def test_under_fp16_fits_or_trains_the_fp32_cache_and_saves_it(name, data_root, tmp_path):
    trainer = demo_trainer(name, f"{name}/tiny.yaml", data_root, str(tmp_path), "TRAINER.TIP_ADAPTER.PREC", "fp16")
    frozen = clip_state(trainer.model)
    trainer.train()
    assert same_tensors(frozen, clip_state(trainer.model))
    cache = trainer.model.cache_model
    assert cache.built and cache.keys.dtype == torch.float32 and torch.isfinite(cache.keys).all()
    assert trained_parameter_count(trainer) == cache.keys.numel()
    checkpoint = load_checkpoint(os.path.join(str(tmp_path), "cache_model", "model.pth.tar-1"))
    assert {"keys", "labels", "alpha", "beta"} <= set(checkpoint["state_dict"])
    assert not any(k.startswith("clip_model.") for k in checkpoint["state_dict"])
    # the searched values are those saved
    assert float(checkpoint["state_dict"]["alpha"]) == float(cache.alpha)


@pytest.mark.parametrize("name, key, value, message", [
    ("TipAdapter", "TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", "0", "AUGMENT_EPOCH must be >= 1"),
    ("TipAdapter", "TRAINER.TIP_ADAPTER.SEARCH_STEP", "[10]", "SEARCH_SCALE and SEARCH_STEP are"),
    ("TipAdapter", "TRAINER.TIP_ADAPTER.PREC", "fp8", "TRAINER.TIP_ADAPTER.PREC must be one of"),
    ("TipAdapterF", "OPTIM.NAME", "sgd", "OPTIM.NAME must be 'adamw'"),
])
def test_bad_settings_name_the_key(name, key, value, message, data_root, tmp_path):
    with pytest.raises(ValueError, match=message):
        demo_trainer(name, f"{name}/tiny.yaml", data_root, str(tmp_path), key, value)
