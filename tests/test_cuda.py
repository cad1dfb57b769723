"""On a CUDA GPU (skipped elsewhere; benchmarks/gpu_check.sh runs them): every trainer trains a few steps and
evaluates in every precision, and every exact speed-up gives the plain path's logits."""
import pytest
import torch

from benchmarks.measure import plain_opts
from clip import text_plan
from dassl.utils import set_cuda_math
from datasets.demo import ensure_demo_data
from trainers_testutils import DEMO_TRAINERS, clip_state, demo_trainer, same_tensors

pytestmark = pytest.mark.cuda

TRAINERS = DEMO_TRAINERS
PRECISIONS = ("fp32", "fp16", "amp", "bf16")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda") / "data"
    ensure_demo_data(str(root / "demo"))
    return str(root)


@pytest.mark.parametrize("prec", PRECISIONS)
@pytest.mark.parametrize("name,config,prec_key", TRAINERS, ids=[f"{n}-{c}" for n, c, _ in TRAINERS])
def test_every_trainer_trains_and_evaluates_on_cuda(name, config, prec_key, prec, data_root, tmp_path):
    trainer = demo_trainer(name, config, data_root, str(tmp_path), prec_key, prec, "USE_CUDA", "True",
                           "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TEST.NO_TEST", "True")
    assert trainer.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in trainer.model.parameters())
    frozen_before = clip_state(trainer.model)
    prompts_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    if not name.startswith("Zeroshot"):
        trainer.train()  # one epoch of 5 steps
        trained = {n: p.detach() for n, p in trainer.model.named_parameters() if p.requires_grad}
        assert all(torch.isfinite(p).all() for p in trained.values())
        assert any(not torch.equal(p, prompts_before[n]) for n, p in trained.items()), "no prompt was updated"
    accuracy = trainer.test()
    assert 0.0 <= accuracy <= 100.0
    assert same_tensors(frozen_before, clip_state(trainer.model))


@pytest.mark.parametrize("name,config", [("CoOp", "CoOp/tiny.yaml"), ("MaPLe", "MaPLe/tiny.yaml"),
                                         ("IVLP", "IVLP/tiny.yaml"), ("CoCoOp", "CoCoOp/tiny.yaml"),
                                         ("PromptSRC", "PromptSRC/tiny.yaml")])
def test_every_speedup_gives_the_plain_logits_on_cuda(name, config, data_root, tmp_path, monkeypatch,
                                                      cuda_math_flags):
    """Evaluation cache, text truncation, shared prefix, fused attention, evaluation chunks (and any switch added
    under TRAINER.SPEEDUPS, which plain_opts turns off too) against the plain path, in exact fp32."""
    monkeypatch.setattr(text_plan, "_PREFIX_COST_IN_POSITIONS", 0)  # share the prefix of the demo's few classes
    opts = ("USE_CUDA", "True", "CUDA_EXACT_FP32", "True", "TRAINER.EVAL_TEXT_CHUNK", "3")
    ours = demo_trainer(name, config, data_root, str(tmp_path / "ours"), *opts)
    plain = demo_trainer(name, config, data_root, str(tmp_path / "plain"), *opts, *plain_opts(ours.cfg))
    plain.model.load_state_dict(ours.model.state_dict())
    set_cuda_math(exact_fp32=ours.cfg.CUDA_EXACT_FP32)  # as train.py does
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(6, 3, 32, 32, generator=generator).to(ours.device)
    ours.set_model_mode("eval")
    plain.set_model_mode("eval")
    with torch.no_grad():
        first, second = ours.model_inference(images), ours.model_inference(images)  # the second from the cache
        reference = plain.model_inference(images)
    torch.testing.assert_close(first, reference, rtol=0, atol=1e-4)
    torch.testing.assert_close(second, first, rtol=0, atol=0)
