"""Official-style MaPLe, IVLP and VPT trainer files (tests/official_style_{maple,ivlp,vpt}.py: the
`design_details` protocol, the [x, deep_prompts, counter] text call, prompts owned by CLIP under VPT names,
the backbone looked up through `clip._MODELS` / `clip._download`) give the same logits as this project's
trainers for the same seed and config, before and after training steps: MaPLe and IVLP bit-identical in
fp32 (with our exact text truncation off, see below; with it, to float rounding), VPT to float rounding,
MaPLe and IVLP to fp16 rounding in fp16."""
import pytest
import torch

import dassl_e2e_plugin  # noqa: F401  (registers the TinyColors dataset)
import official_style_ivlp  # noqa: F401  (registers OfficialStyleIVLP)
import official_style_maple  # noqa: F401  (registers OfficialStyleMaPLe)
import official_style_vpt  # noqa: F401  (registers OfficialStyleVPT)
from clip import model as clip_model
from clip.download import CACHE_ENV
from dassl.engine import build_trainer
from dassl.utils import set_random_seed
from dassl_testutils import make_color_dataset
from trainers_testutils import method_cfg

# (our trainer, the official-style one, tiny config, precision key)
FAMILY = [
    ("MaPLe", "OfficialStyleMaPLe", "MaPLe/tiny.yaml", "TRAINER.MAPLE.PREC"),
    ("IVLP", "OfficialStyleIVLP", "IVLP/tiny.yaml", "TRAINER.IVLP.PREC"),
    ("VPT", "OfficialStyleVPT", "VPT/tiny.yaml", "TRAINER.VPT.PREC"),
]


@pytest.fixture(scope="module")
def colors_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("colors"))
    make_color_dataset(root, per_class=8, size=10)
    return root


def _trainer(name, config, root, output_dir, *opts):
    cfg = method_cfg(config, "TRAINER.NAME", name, "DATASET.NAME", "TinyColors", "DATASET.ROOT", root,
                     "DATASET.NUM_SHOTS", "2", "OUTPUT_DIR", output_dir, *opts)
    set_random_seed(1)
    return build_trainer(cfg)


def _eval_logits(trainer, image):
    trainer.set_model_mode("eval")
    with torch.no_grad():
        return trainer.model(image).float()


def _assert_equal(actual, expected, msg=""):
    assert torch.equal(actual, expected), f"{msg}: max difference {(actual - expected).abs().max().item():.2e}"


def _train_step(trainer, batch):
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 2  # not the epoch's last batch: the LR does not step
    trainer.forward_backward(batch)


@pytest.mark.parametrize("ours, theirs, config, prec_key", FAMILY, ids=[row[0] for row in FAMILY])
def test_official_style_file_gives_our_logits_fp32(ours, theirs, config, prec_key, colors_root, tmp_path,
                                                   monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # where clip._download writes the random backbone
    # The official-style text encoders compute all 77 positions for every class; without our (exact)
    # truncation to the EOT and shared-prefix encoding the two computations are the same operations, so the
    # logits are bit-identical.
    monkeypatch.setattr(clip_model._truncation, "enabled", False)
    monkeypatch.setattr(clip_model._prefix_sharing, "enabled", False)
    mine = _trainer(ours, config, colors_root, str(tmp_path / "ours"), prec_key, "fp32",
                    "TRAINER.SPEEDUPS.TEXT_TRUNCATION", "False", "TRAINER.SPEEDUPS.SHARED_PREFIX", "False")
    official = _trainer(theirs, config, colors_root, str(tmp_path / "theirs"), prec_key, "fp32")
    trainable = {n for n, p in official.model.named_parameters() if p.requires_grad}
    assert trainable and all("prompt_learner" in n or "VPT" in n for n in trainable)

    batch = next(iter(mine.train_loader_x))
    image = batch["img"]
    # VPT's fixed text features: ours come from the template-ensemble code (normalised, averaged over the one
    # template, normalised again), the official style normalises once, so they agree to rounding only.
    same = torch.testing.assert_close if ours == "VPT" else _assert_equal
    before = _eval_logits(mine, image)
    same(_eval_logits(official, image), before)
    for step in range(3):
        for trainer in (mine, official):
            _train_step(trainer, batch)
        after = _eval_logits(mine, image)
        same(_eval_logits(official, image), after, msg=f"after step {step + 1}")
    assert not torch.allclose(after, before)  # the steps moved the prompts


@pytest.mark.parametrize("ours, theirs, config, prec_key", FAMILY[:2], ids=[row[0] for row in FAMILY[:2]])
def test_official_style_file_gives_our_logits_fp16(ours, theirs, config, prec_key, colors_root, tmp_path,
                                                   monkeypatch):
    """OpenAI's fp16 weights (the official default PREC): the same logits up to fp16 rounding (the official
    style keeps fp16 prompts where ours keeps fp32 masters rounded to the same values)."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    mine = _trainer(ours, config, colors_root, str(tmp_path / "ours"), prec_key, "fp16")
    official = _trainer(theirs, config, colors_root, str(tmp_path / "theirs"), prec_key, "fp16")
    assert official.model.dtype == torch.float16
    image = next(iter(mine.train_loader_x))["img"]
    torch.testing.assert_close(_eval_logits(official, image), _eval_logits(mine, image), rtol=0, atol=0.05)
