"""Prompt placement (hand-checked MaPLe forward), the exact speed-ups against the plain path, and loading
checkpoints: ours across class sets (base -> novel, through train.py) and the official layouts."""
import os
import subprocess
import sys

import pytest
import torch

from trainers.cocoop import CoCoOpCLIP, PromptLearner as CoCoOpLearner
from trainers.common import PromptedCLIP, SpeedOptions
from trainers.maple import MultiModalPromptLearner
from trainers_testutils import REPO, demo_args, demo_trainer, fp32_clip, method_cfg

CLASSNAMES = ["circle", "red_square", "a long striped triangle", "star"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def tiny():
    return fp32_clip()


def maple(tiny, depth, **options):
    torch.manual_seed(0)
    learner = MultiModalPromptLearner(method_cfg("MaPLe/tiny.yaml", "TRAINER.MAPLE.PROMPT_DEPTH", str(depth)),
                                      CLASSNAMES, tiny)
    return PromptedCLIP(tiny, learner, SpeedOptions(**options)).eval()


def block_inputs(blocks):
    seen = []
    handles = [b.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone())) for b in blocks]
    return seen, handles


@pytest.mark.parametrize("depth", [1, 2])
@torch.no_grad()
def test_maple_prompt_tokens_per_layer(tiny, depth):
    # every row whole (the shared prefix: test_shared_prefix.py; truncation: test_clip_prompts.py)
    model = maple(tiny, depth, shared_prefix=False, text_truncation=False)
    pl = model.prompt_learner
    text_in, h1 = block_inputs(tiny.transformer.resblocks)
    vision_in, h2 = block_inputs(tiny.visual.transformer.resblocks)
    text_out = []
    h3 = tiny.transformer.resblocks[0].register_forward_hook(lambda m, a, out: text_out.append(out.detach().clone()))
    image = torch.randn(2, 3, 32, 32)
    model(image)
    for h in (*h1, *h2, h3):
        h.remove()
    # the text blocks see the rows packed one after the other: [classes * 77, D] -> [classes, 77, D]
    text_in, text_out = ([x.view(len(CLASSNAMES), -1, x.shape[-1]) for x in seen] for seen in (text_in, text_out))
    n = pl.n_ctx
    pos = tiny.positional_embedding
    # text layer 0: [SOS] ctx ctx "of a <class> ." with positional embeddings
    assert torch.allclose(text_in[0][:, 1:1 + n], (pl.ctx + pos[1:1 + n]).expand(len(CLASSNAMES), -1, -1))
    assert torch.allclose(text_in[0][:, 0], pl.token_prefix[:, 0] + pos[0])
    # vision layer 0: CLS + patches, then ln_pre(proj(ctx)) appended last
    grid = (32 // 8) ** 2
    assert vision_in[0].shape[1] == 1 + grid + n
    assert torch.allclose(vision_in[0][:, -n:], tiny.visual.ln_pre(pl.proj(pl.ctx)).expand(2, -1, -1), atol=1e-6)
    if depth == 1:
        assert pl.deep_text_prompts() == [] and pl.vision_prompts()[1] == []
        assert torch.equal(text_in[1], text_out[0])  # layer 1 just carries the tokens on
    else:
        deep = pl.compound_prompts_text[0]
        assert torch.equal(text_in[1][:, 1:1 + n], deep.expand(len(CLASSNAMES), -1, -1))  # no positional embedding
        assert torch.equal(text_in[1][:, 1 + n:], text_out[0][:, 1 + n:])
        coupled = pl.compound_prompt_projections[0](deep)  # vision prompt = projection of the text prompt
        assert torch.allclose(vision_in[1][:, -n:], coupled.expand(2, -1, -1))
        assert not torch.allclose(vision_in[1][:, -n:], vision_in[0][:, -n:])


@torch.no_grad()
def test_eval_cache_and_truncation_and_chunks_equal_the_plain_path(tiny):
    fast = maple(tiny, 2)
    plain = PromptedCLIP(tiny, fast.prompt_learner, SpeedOptions(False, False, False, 0, False))
    chunked = PromptedCLIP(tiny, fast.prompt_learner, SpeedOptions(text_chunk=3))
    images = torch.randn(2, 4, 3, 32, 32)
    for batch in images:
        expected = plain(batch)
        torch.testing.assert_close(fast(batch), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(chunked(batch), fast(batch), rtol=0, atol=1e-5)
    assert fast._cache is not None
    # Any change to the prompts (optimizer step, weight load) invalidates the cache.
    fast.prompt_learner.ctx.add_(0.5)
    torch.testing.assert_close(fast(images[0]), plain(images[0]), rtol=1e-5, atol=1e-5)
    state = {k: v + 0.1 for k, v in fast.prompt_learner.state_dict().items()}
    fast.prompt_learner.load_state_dict(state)
    torch.testing.assert_close(fast(images[0]), plain(images[0]), rtol=1e-5, atol=1e-5)
    with torch.enable_grad():
        fast.train()
        fast(images[0])
    assert fast._cache is None


@torch.no_grad()
def test_cocoop_image_groups_equal_one_call(tiny):
    torch.manual_seed(0)
    learner = CoCoOpLearner(method_cfg("CoCoOp/tiny.yaml"), CLASSNAMES, tiny)
    whole = CoCoOpCLIP(tiny, learner, SpeedOptions(text_chunk=0)).eval()
    grouped = CoCoOpCLIP(tiny, learner, SpeedOptions(text_chunk=4, text_truncation=False)).eval()
    image = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(grouped(image), whole(image), rtol=1e-5, atol=1e-5)


def official_maple_state(model):
    """A full CustomCLIP state dict as the official MaPLe writes it (frozen CLIP under its module names)."""
    clip_model = model.clip_model
    state = {f"prompt_learner.{k}": v.clone() for k, v in model.prompt_learner.state_dict().items()}
    state.update({f"image_encoder.{k}": v for k, v in clip_model.visual.state_dict().items()})
    state.update({f"text_encoder.transformer.{k}": v for k, v in clip_model.transformer.state_dict().items()})
    state.update({"text_encoder.positional_embedding": clip_model.positional_embedding,
                  "text_encoder.text_projection": clip_model.text_projection,
                  "text_encoder.ln_final.weight": clip_model.ln_final.weight,
                  "text_encoder.ln_final.bias": clip_model.ln_final.bias,
                  "logit_scale": clip_model.logit_scale})
    # Trained on another class set: the class-name buffers differ and must be ignored.
    state["prompt_learner.token_prefix"] = state["prompt_learner.token_prefix"][:2]
    state["prompt_learner.token_suffix"] = state["prompt_learner.token_suffix"][:2]
    return state


def official_ivlp_state(model):
    pl = model.prompt_learner
    state = {"prompt_learner.ctx": pl.ctx.clone(), "image_encoder.VPT": pl.vision_ctx.clone(),
             "prompt_learner.token_prefix": pl.token_prefix[:1], "prompt_learner.token_suffix": pl.token_suffix[:1]}
    for k, p in enumerate(pl.vision_deep_prompts):
        state[f"image_encoder.transformer.resblocks.{k + 1}.VPT_shallow"] = p.clone()
    for k, p in enumerate(pl.text_deep_prompts):
        state[f"text_encoder.transformer.resblocks.{k + 1}.VPT_shallow"] = p.clone()
    return state


def official_coop_state(model):
    pl = model.prompt_learner
    return {"ctx": pl.ctx.clone(), "token_prefix": pl.token_prefix[:3], "token_suffix": pl.token_suffix[:3]}


def official_cocoop_state(model):
    """The official CoCoOp registers its prompt learner: ctx, meta_net.linear{1,2}.* and the token buffers."""
    state = {k: v.clone() for k, v in model.prompt_learner.state_dict().items()}
    assert {"ctx", "meta_net.linear1.weight", "meta_net.linear2.bias"} <= set(state)
    state["token_prefix"], state["token_suffix"] = state["token_prefix"][:3], state["token_suffix"][:3]
    return state


def official_vpt_state(model):
    """The official VPT keeps its prompts inside CLIP's image encoder (whole CustomCLIP registered)."""
    pl = model.prompt_learner
    state = {"image_encoder.VPT": pl.vision_ctx.clone()}
    for k, p in enumerate(pl.vision_deep_prompts):
        state[f"image_encoder.transformer.resblocks.{k + 1}.VPT_shallow"] = p.clone()
    return state


@pytest.mark.parametrize("name,config,make_state", [
    ("MaPLe", "MaPLe/tiny.yaml", official_maple_state),
    ("IVLP", "IVLP/tiny.yaml", official_ivlp_state),
    ("CoOp", "CoOp/tiny.yaml", official_coop_state),
    ("CoCoOp", "CoCoOp/tiny.yaml", official_cocoop_state),
    ("VPT", "VPT/tiny.yaml", official_vpt_state),
])
def test_official_checkpoint_layout_loads(name, config, make_state, data_root, tmp_path):
    trainer = demo_trainer(name, config, data_root, str(tmp_path / "out"))
    model = trainer.model.eval()
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for p in model.prompt_learner.parameters():
            p.add_(torch.randn_like(p))
        expected = model(image)
        state = make_state(model)
        for p in model.prompt_learner.parameters():
            p.add_(torch.randn_like(p))
    registered = trainer.get_model_names()[0]
    os.makedirs(tmp_path / "official" / registered)
    torch.save({"state_dict": state, "epoch": 5, "optimizer": None, "scheduler": None, "val_result": None},
               tmp_path / "official" / registered / "model.pth.tar-5")
    trainer.load_model(str(tmp_path / "official"), epoch=5)
    with torch.no_grad():
        torch.testing.assert_close(model(image), expected, rtol=0, atol=0)


def test_checkpoint_of_another_configuration_is_refused(data_root, tmp_path):
    trainer = demo_trainer("MaPLe", "MaPLe/tiny.yaml", data_root, str(tmp_path / "out"))
    state = {k: v for k, v in official_maple_state(trainer.model).items() if "compound" not in k}
    os.makedirs(tmp_path / "ckpt" / "MultiModalPromptLearner")
    torch.save({"state_dict": state, "epoch": 1}, tmp_path / "ckpt" / "MultiModalPromptLearner" / "model.pth.tar-1")
    with pytest.raises(ValueError, match=r'Checkpoint ".*model\.pth\.tar-1" does not fit the model: .*compound_prompts_text\.0'):
        trainer.load_model(str(tmp_path / "ckpt"), epoch=1)


def test_base_to_novel_through_train_py(data_root, tmp_path):
    root, out = data_root, str(tmp_path / "base")
    run = dict(cwd=REPO, capture_output=True, text=True, timeout=300)
    base = subprocess.run([sys.executable, "train.py", *demo_args("MaPLe", "MaPLe/tiny.yaml", root, out)], **run)
    assert base.returncode == 0, base.stderr[-2000:]
    checkpoint = os.path.join(out, "MultiModalPromptLearner", "model.pth.tar-1")
    assert os.path.isfile(checkpoint)
    new_args = demo_args("MaPLe", "MaPLe/tiny.yaml", root, str(tmp_path / "new"),
                         extra=["--eval-only", "--model-dir", out, "--load-epoch", "1"])
    new_args[new_args.index("base")] = "new"
    novel = subprocess.run([sys.executable, "train.py", *new_args], **run)
    assert novel.returncode == 0, novel.stderr[-2000:]
    assert f'Loading weights to MultiModalPromptLearner from "{checkpoint}"' in novel.stdout
    assert "* accuracy:" in novel.stdout
