"""TRAINER.SPEEDUPS.SHARED_PREFIX in every trainer: on by default, off under the benchmark's --plain, and
the same numbers either way within fp32 rounding (loss, gradients and parameters over training steps,
evaluation logits), with the prefix actually shared where the prompts have one."""
import pytest
import torch

import trainers.common
from benchmarks.measure import Spec, build_cfg, build_trainer_on_classes, load_classnames
from clip import text_plan
from clip.text_plan import plan_text


@pytest.fixture(autouse=True)
def share_any_prefix(monkeypatch):
    """These tests use a few short prompts, which the cost rule would encode whole: share every prefix."""
    monkeypatch.setattr(text_plan, "_PREFIX_COST_IN_POSITIONS", 0)


CLASSES = 6
CASES = [
    ("CoOp", "CoOp/tiny.yaml", (), 5),  # SOS + a unified context of 4
    ("CoOp", "CoOp/tiny.yaml", ("TRAINER.COOP.CSC", "True"), 1),  # class-specific: SOS alone
    ("CoCoOp", "CoCoOp/tiny.yaml", (), 5),  # per image: SOS + its 4 context vectors
    ("MaPLe", "MaPLe/tiny.yaml", (), 5),  # SOS ctx ctx "of a"
    ("IVLP", "IVLP/tiny.yaml", (), 5),
    ("VPT", "VPT/tiny.yaml", (), 5),  # the fixed "a photo of a {}." features
    ("PromptSRC", "PromptSRC/tiny.yaml", (), 5),  # (its teacher's 60 templates have their own prefixes)
    ("ZeroshotCLIP", "CoOp/tiny.yaml", (), 5),
]


def _run(trainer_name: str, config: str, opts: tuple, shared: bool, monkeypatch) -> dict:
    prefixes = []

    def recording_plan(*args, **kwargs):
        plan = plan_text(*args, **kwargs)
        prefixes.append(plan.prefix)
        return plan

    monkeypatch.setattr(trainers.common, "plan_text", recording_plan)
    spec = Spec(trainer_name, f"configs/trainers/{config}", "ViT-Tiny", classes=CLASSES, phase="train",
                opts=[*opts, "TRAINER.SPEEDUPS.SHARED_PREFIX", str(shared)])
    cfg = build_cfg(spec)
    torch.manual_seed(cfg.SEED)
    trainer = build_trainer_on_classes(cfg, load_classnames(CLASSES))
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(cfg.DATALOADER.TRAIN_X.BATCH_SIZE, 3, 32, 32, generator=generator)
    labels = torch.arange(len(images)) % CLASSES
    result = {"losses": [], "grads": []}
    if hasattr(trainer, "optim"):
        trainer.set_model_mode("train")
        trainer.batch_idx, trainer.num_batches = 0, 3
        for _ in range(2):
            result["losses"].append(float(trainer.forward_backward({"img": images, "label": labels})["loss"]))
            result["grads"].append({name: p.grad.clone() for name, p in trainer.model.named_parameters()
                                    if p.grad is not None})
        result["params"] = {name: p.detach().clone() for name, p in trainer.model.named_parameters()
                            if p.requires_grad}
    trainer.set_model_mode("eval")
    with torch.no_grad():
        result["logits"] = trainer.model_inference(images)
    result["prefixes"] = prefixes
    return result


@pytest.mark.parametrize("trainer_name, config, opts, prefix", CASES,
                         ids=[f"{c[0]}{'-' + c[2][0].split('.')[-1] if c[2] else ''}" for c in CASES])
def test_shared_prefix_changes_no_number(trainer_name, config, opts, prefix, monkeypatch):
    on = _run(trainer_name, config, opts, True, monkeypatch)
    off = _run(trainer_name, config, opts, False, monkeypatch)
    assert prefix in on["prefixes"] and set(off["prefixes"]) == {0}
    torch.testing.assert_close(on["logits"], off["logits"], rtol=1e-5, atol=1e-5)
    assert on["losses"] == pytest.approx(off["losses"], rel=1e-5, abs=1e-6)
    for grads_on, grads_off in zip(on["grads"], off["grads"]):
        assert grads_on.keys() == grads_off.keys() and grads_on
        for name in grads_on:
            scale = grads_off[name].abs().max().clamp(min=1e-12)
            torch.testing.assert_close(grads_on[name] / scale, grads_off[name] / scale, rtol=0, atol=1e-4,
                                       msg=lambda m: f"{name}: {m}")
    for name, value in on.get("params", {}).items():
        torch.testing.assert_close(value, off["params"][name], rtol=1e-5, atol=1e-7)


def test_shared_prefix_is_on_by_default_and_off_under_plain():
    default = build_cfg(Spec("MaPLe", "configs/trainers/MaPLe/tiny.yaml", "ViT-Tiny", 3, "train"))
    plain = build_cfg(Spec("MaPLe", "configs/trainers/MaPLe/tiny.yaml", "ViT-Tiny", 3, "train", plain=True))
    assert default.TRAINER.SPEEDUPS.SHARED_PREFIX is True
    assert plain.TRAINER.SPEEDUPS.SHARED_PREFIX is False
    assert trainers.common.SpeedOptions.from_cfg(default).shared_prefix
    assert not trainers.common.SpeedOptions.from_cfg(plain).shared_prefix
