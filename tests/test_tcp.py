"""TCP (trainers/tcp.py): step by step against the official-style file (tests/official_style_tcp.py: the same
initial prompts, logits, losses and updated context and meta-net in fp32 over Adam steps), the class-aware prompt
at the right block and positions (against the official-style splice, for every block: only the configured one
agrees), the meta-net's input (the current class names' fp16 hand-written features, so novel classes get their
own prompts), the loss, the checkpoint's official keys, and bad layers."""
import os

import pytest
import torch
import torch.nn.functional as F

import official_style_tcp
from clip import clip
from clip import model as clip_model
from dassl.config import ConfigError
from dassl.utils import load_checkpoint
from trainers.kgcoop import fp16_normalize, fp16_text_features
from trainers.tcp import KNOWLEDGE_TEMPLATES, PROMPT_TEMPLATES, ClassAwarePromptLearner, TCP
from trainers_testutils import assert_steps_agree, demo_trainer, method_cfg, options

CONFIG = "TCP/tiny.yaml"
# The pre-trained demo backbone (4 text blocks, 32-pixel images like the tiny config's): block 2 has blocks on
# both sides of it.
DEMO_BACKBONE = ("MODEL.BACKBONE.NAME", "DemoCLIP-ViT-Tiny", "TRAINER.TCP.PROMPT_LAYER", "2")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))  # the demo dataset is written there on first use


def _learned(trainer):
    return dict(trainer._models["prompt_learner"].named_parameters())


def test_official_style_file_step_by_step_fp32(data_root, tmp_path, monkeypatch):
    # the official style encodes all 77 positions: without our exact truncation both run the same operations
    monkeypatch.setattr(clip_model._truncation, "enabled", False)
    monkeypatch.setattr(clip_model._prefix_sharing, "enabled", False)
    monkeypatch.setattr(official_style_tcp, "LAYERS", [2])
    opts = (*DEMO_BACKBONE, "TRAINER.TCP.PREC", "fp32", "TRAINER.COOP.PREC", "fp32", "TRAINER.COCOOP.PREC", "fp32",
            "TRAINER.COOP.N_CTX", "4", "OPTIM.LR", "0.02", "OPTIM.WARMUP_EPOCH", "0",
            "TRAINER.SPEEDUPS.TEXT_TRUNCATION", "False", "TRAINER.SPEEDUPS.SHARED_PREFIX", "False")
    mine = demo_trainer("TCP", CONFIG, data_root, str(tmp_path / "ours"), *opts)
    official = demo_trainer("OfficialStyleTCP", CONFIG, data_root, str(tmp_path / "theirs"), *opts,
                            imports=["official_style_tcp"])
    names = sorted(_learned(official))
    assert names == sorted(_learned(mine)) == ["ctx", "meta_net.linear1.bias", "meta_net.linear1.weight",
                                                "meta_net.linear2.bias", "meta_net.linear2.weight"]
    # the same initial context and meta-net: both drew them in the official order from the same seeded generator
    for name in names:
        assert torch.equal(_learned(mine)[name], _learned(official)[name]), name
    initial = {name: p.detach().clone() for name, p in _learned(mine).items()}

    # four Adam steps, checked on 16 test images; the steps must move the logits by more than 1e-2
    assert_steps_agree(mine, official, _learned, steps=4, images=16, moved=1e-2)
    # every part moved: the meta-net receives gradients through the class-aware prompt, the context through the
    # blocks before it
    assert all(not torch.equal(initial[name], _learned(mine)[name]) for name in names)


def _demo_clip():
    return clip.build_model(clip.load_state_dict("DemoCLIP-ViT-Tiny")).float().eval()


CLASSNAMES = ("circle", "hot air balloon", "tree")


def _learner(model, layer, classnames=CLASSNAMES):
    cfg = method_cfg(CONFIG, "TRAINER.TCP.PROMPT_LAYER", str(layer), "DATASET.NAME", "OxfordPets")
    torch.manual_seed(0)
    knowledge = F.normalize(torch.randn(len(classnames), model.text_projection.shape[1]), dim=-1)
    learner = ClassAwarePromptLearner(cfg, classnames, model, knowledge)
    with torch.no_grad():  # a meta-net far from its initial scale, so that a misplaced prompt shows
        learner.meta_net.linear2.weight.mul_(50.0)
    return learner


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_the_class_aware_prompt_replaces_the_context_positions_at_the_input_of_its_block(layer, monkeypatch):
    model = _demo_clip()
    learner = _learner(model, layer)
    with torch.no_grad():
        # ours with the exact speed-ups on (each row cut after its EOT, SOS shared)
        ours = learner.class_text_features(model, options())
        prompts, class_prompt = learner.class_prompts(slice(None)), learner.class_aware_prompts()
        reference = official_style_tcp.TextEncoder(model)
        for block in range(model.transformer.layers):
            monkeypatch.setattr(official_style_tcp, "LAYERS", [block])
            theirs = reference(prompts, class_prompt, 1.0, learner.tokenized_prompts)
            if block == layer:
                torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
            else:
                assert not torch.allclose(ours, theirs, rtol=1e-3, atol=1e-3), f"block {block} gives the same features"
    # at the input of each block (every position encoded, no shared prefix: rows of L positions), positions 1..n of
    # every class hold the class-aware tokens at the configured block only
    inputs = []
    hooks = [block.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
             for block in model.transformer.resblocks]
    with torch.no_grad():
        learner.class_text_features(model, options(text_truncation=False, shared_prefix=False))
    for hook in hooks:
        hook.remove()
    rows, length = prompts.shape[:2]
    for block, x in enumerate(inputs):
        spans = x.reshape(rows, length, -1)[:, 1:1 + learner.n_ctx]
        assert torch.equal(spans, class_prompt) == (block == layer), f"block {block}"


def test_the_prompts_follow_the_templates_and_every_class_gets_its_own_tokens():
    model = _demo_clip()
    learner = _learner(model, 2)
    # "[SOS] ctx ctx ctx ctx <name>, a type of pet." (the official "X X X X {}, a type of pet.")
    expected = clip.tokenize([f"X X X X {PROMPT_TEMPLATES['OxfordPets'].format(n)}" for n in CLASSNAMES])
    assert torch.equal(learner.tokenized_prompts, expected)
    tokens = learner.class_aware_prompts()
    assert tokens.shape == (3, learner.n_ctx, model.ln_final.weight.shape[0])
    assert not torch.allclose(tokens[0], tokens[1])  # class-aware: different names, different tokens
    deep = learner.deep_text_prompts()
    assert [p.shape[-2] for p in deep] == [0, learner.n_ctx]  # only block 2's input is replaced


def test_our_prompt_templates_are_the_official_ones_after_the_context():
    # the official "X X X X ..." (or "a photo of a ...") templates and ours hold the same tokens after position 4
    assert set(official_style_tcp.CUSTOM_TEMPLATES) <= set(PROMPT_TEMPLATES)
    for dataset, template in official_style_tcp.CUSTOM_TEMPLATES.items():
        theirs = clip.tokenize(template.format("golden retriever"))
        ours = clip.tokenize(f"X X X X {PROMPT_TEMPLATES[dataset].format('golden retriever')}")
        assert torch.equal(theirs[:, 5:], ours[:, 5:]), dataset


def test_knowledge_loss_and_checkpoint_keys(data_root, tmp_path):
    trainer = demo_trainer("TCP", CONFIG, data_root, str(tmp_path), "OPTIM.MAX_EPOCH", "1")
    model, learner = trainer.model, trainer.model.prompt_learner
    names = trainer.dm.dataset.classnames
    texts = [KNOWLEDGE_TEMPLATES.get("Demo", "a photo of a {}.").format(n.replace("_", " ")) for n in names]
    knowledge = fp16_text_features(model.clip_model, texts, options())
    # the meta-net's input: the current classes' hand-written features normalised once (fp16), the distance's
    # reference: the same normalised twice more in fp16 (the official forward, then its cosine_similarity)
    reference = fp16_normalize(fp16_normalize(knowledge))
    assert torch.equal(learner.class_knowledge, knowledge)
    assert torch.equal(model.reference_features, reference)
    batch = next(iter(trainer.train_loader_x))
    image, label = trainer.parse_batch_train(batch)
    trainer.set_model_mode("train")
    loss, logits = trainer.training_loss(image, label)
    image_features, text_features = model.features(image)
    # the official call: fp32 features against the fp16 reference
    distance = 1 - F.cosine_similarity(text_features, reference.half(), dim=1, eps=1e-7).mean()
    expected = F.cross_entropy(logits, label) + 8.0 * distance
    torch.testing.assert_close(loss, expected)
    assert distance > 0  # the class-aware prompts move the features away from the hand-written ones
    trainer.train()
    saved = load_checkpoint(os.path.join(str(tmp_path), "prompt_learner", "model.pth.tar-1"))["state_dict"]
    # the official file's checkpoint keys (its prompt learner registered as `prompt_learner`)
    assert sorted(saved) == ["ctx", "meta_net.linear1.bias", "meta_net.linear1.weight", "meta_net.linear2.bias",
                             "meta_net.linear2.weight", "token_prefix", "token_suffix"]


@pytest.mark.parametrize("layer", ["0", "2"])
def test_a_layer_outside_the_backbone_names_the_key(layer, data_root, tmp_path):
    with pytest.raises(ConfigError, match="TRAINER.TCP.PROMPT_LAYER must be between 1 and 1"):
        demo_trainer("TCP", CONFIG, data_root, str(tmp_path), "TRAINER.TCP.PROMPT_LAYER", layer)


def test_the_official_schedule_is_the_default_config():
    assert TCP.SPEC.config_for("base2new") == "vit_b16_ep100_ctxv1"
    cfg = method_cfg("TCP/vit_b16_ep100_ctxv1.yaml")
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.ADAM_EPS, cfg.OPTIM.MAX_EPOCH) == ("adam", 0.002, 1e-3, 50)
    assert (cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.TRAINER.TCP.N_CTX, cfg.TRAINER.TCP.W,
            cfg.TRAINER.TCP.PROMPT_LAYER) == (32, 4, 8.0, 8)
