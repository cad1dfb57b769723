"""scripts/interpret_prompts.py: contexts built from known token embeddings read back as those tokens at distance
~0 (shallow, deep per layer, class-specific per class), through the command on real tiny runs of train.py and on
checkpoints in the official layouts; vision prompts are named, not decoded; frozen weights are not prompts."""
import json
import os

import pytest
import torch

import train
from clip import clip
from clip.random_models import random_state_dict
from dassl.utils import load_checkpoint, save_checkpoint
from dassl.utils.errors import InputError
from datasets.demo import ensure_demo_data
from scripts import interpret_prompts
from trainers_testutils import TINY, demo_args

PHRASE = "a photo of a"
OTHER = "dog on grass"


@pytest.fixture(scope="module")
def embedding():
    return random_state_dict(TINY)["token_embedding.weight"].float()


def token_ids(text: str) -> list[int]:
    tokens = clip.tokenize(text)[0]
    return tokens[1:int(tokens.argmax())].tolist()  # between SOS and EOT


def context(embedding: torch.Tensor, text: str, noise: float = 0.0) -> torch.Tensor:
    """The token embeddings of `text`, moved by `noise` (a distance far below the gaps between tokens)."""
    vectors = embedding[token_ids(text)].clone()
    return vectors + noise * torch.randn(vectors.shape, generator=torch.Generator().manual_seed(0))


def assert_reads(reading, text: str, tolerance: float = 1e-5) -> None:
    assert [vector.token_ids[0] for vector in reading.vectors] == token_ids(text)
    assert reading.words == text
    assert all(vector.distances[0] <= tolerance for vector in reading.vectors)
    # the second-nearest token is a real neighbour, not the same point again
    assert all(vector.distances[1] > 10 * tolerance + 1e-3 for vector in reading.vectors)


def test_shallow_deep_and_class_specific_contexts_read_as_their_tokens(embedding):
    state = {
        "prompt_learner.ctx": context(embedding, PHRASE),
        "prompt_learner.compound_prompts_text.1": context(embedding, OTHER),
        "prompt_learner.compound_prompts_text.0": context(embedding, "red car ."),
        "prompt_learner.proj.weight": torch.zeros(32, 64),
        "prompt_learner.token_prefix": torch.zeros(2, 1, 64),
        "clip_model.token_embedding.weight": embedding,  # a frozen weight: not a prompt
    }
    reading = interpret_prompts.read_prompts(state, embedding, topk=3)
    assert [(c.key, c.layer) for c in reading.text] == [
        ("ctx", 0), ("compound_prompts_text.0", 1), ("compound_prompts_text.1", 2)]
    assert_reads(reading.text[0], PHRASE)
    assert_reads(reading.text[1], "red car .")
    assert_reads(reading.text[2], OTHER)
    assert all(len(vector.tokens) == 3 for context_reading in reading.text for vector in context_reading.vectors)
    assert reading.vision == {"proj.weight": [32, 64]} and reading.other == {}

    csc = torch.stack([context(embedding, "big red cat"), context(embedding, "small blue dog")])
    reading = interpret_prompts.read_prompts({"ctx": csc}, embedding, topk=2, classnames=["cat", "dog"])
    assert [(c.class_index, c.class_name) for c in reading.text] == [(0, "cat"), (1, "dog")]
    assert_reads(reading.text[0], "big red cat")
    assert_reads(reading.text[1], "small blue dog")
    # a class list of another length does not name them wrongly
    unnamed = interpret_prompts.read_prompts({"ctx": csc}, embedding, topk=2, classnames=["cat"])
    assert [c.class_name for c in unnamed.text] == [None, None]


def test_a_learned_context_reads_as_its_nearest_tokens_with_their_distance(embedding):
    reading = interpret_prompts.read_prompts({"ctx": context(embedding, PHRASE, noise=0.01)}, embedding, topk=1)
    assert reading.text[0].words == PHRASE
    distances = [vector.distances[0] for vector in reading.text[0].vectors]
    expected = (context(embedding, PHRASE, noise=0.01) - context(embedding, PHRASE)).norm(dim=-1)
    torch.testing.assert_close(torch.tensor(distances), expected, atol=1e-5, rtol=1e-4)


def test_a_context_of_another_width_is_refused_naming_the_backbone(embedding):
    with pytest.raises(InputError, match="width 128.*MODEL.BACKBONE.NAME"):
        interpret_prompts.read_prompts({"ctx": torch.zeros(4, 128)}, embedding, topk=1, backbone=TINY)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Real one-epoch tiny runs of train.py: a class-specific CoOp and a MaPLe with deep prompts."""
    root = tmp_path_factory.mktemp("interpret")
    ensure_demo_data(str(root / "data" / "demo"))
    out = {}
    for name, trainer, config, opts in [
            ("csc", "CoOp", "CoOp/tiny.yaml", ["TRAINER.COOP.CSC", "True"]),
            ("maple", "MaPLe", "MaPLe/tiny.yaml", [])]:
        out[name] = str(root / name)
        args = demo_args(trainer, config, str(root / "data"), out[name], *opts)
        train.main(train.build_parser().parse_args(args))
    return out


def replace_prompts(checkpoint_file: str, prompts: dict) -> None:
    """Put known tensors into a saved checkpoint (shapes checked), re-saved the way the trainer saves."""
    checkpoint = load_checkpoint(checkpoint_file)
    for key, value in prompts.items():
        assert checkpoint["state_dict"][key].shape == value.shape
        checkpoint["state_dict"][key] = value
    save_checkpoint(checkpoint, os.path.dirname(checkpoint_file), model_name=os.path.basename(checkpoint_file))


def run_command(capsys, tmp_path, *argv: str) -> tuple[list, str]:
    out = tmp_path / "reading.json"
    interpret_prompts.main([*argv, "--json", str(out)])
    return json.loads(out.read_text()), capsys.readouterr().out


def test_the_command_reads_a_class_specific_coop_run_per_class(runs, tmp_path, capsys):
    checkpoint_file = os.path.join(runs["csc"], "prompt_learner", "model.pth.tar-1")
    n_cls, n_ctx, _ = load_checkpoint(checkpoint_file)["state_dict"]["ctx"].shape
    state = random_state_dict(TINY)["token_embedding.weight"].float()
    words = ["a big red cat", "one small blue dog", "two old green trees", "the last white car"]
    texts = [words[i % len(words)] for i in range(n_cls)]
    replace_prompts(checkpoint_file, {"ctx": torch.stack([state[token_ids(t)][:n_ctx] for t in texts])})

    [reading], printed = run_command(capsys, tmp_path, runs["csc"], "--topk", "2")
    from api import load_prompted_clip
    classnames = load_prompted_clip(runs["csc"]).classnames  # the run's base classes, in label order
    assert [(c["layer"], c["class_index"], c["class_name"]) for c in reading["text"]] == [
        (0, i, name) for i, name in enumerate(classnames)]
    for context_reading, text in zip(reading["text"], texts):
        assert context_reading["words"] == " ".join(text.split()[:n_ctx])
        assert max(vector["distances"][0] for vector in context_reading["vectors"]) < 1e-5
    assert reading["epoch"] == 1 and reading["backbone"] == TINY
    assert f"class 0 {classnames[0]!r}" in printed and f"nearest words: {reading['text'][0]['words']!r}" in printed


def test_the_command_reads_maple_layer_by_layer_and_leaves_its_vision_side_undecoded(runs, tmp_path, capsys):
    checkpoint_file = os.path.join(runs["maple"], "MultiModalPromptLearner", "model.pth.tar-1")
    state_dict = load_checkpoint(checkpoint_file)["state_dict"]
    deep = sorted(key for key in state_dict if key.startswith("prompt_learner.compound_prompts_text."))
    assert deep, "the tiny MaPLe config has deep prompts"
    embedding = random_state_dict(TINY)["token_embedding.weight"].float()
    n_ctx = state_dict["prompt_learner.ctx"].shape[0]
    texts = {"prompt_learner.ctx": PHRASE, **{key: OTHER for key in deep}}
    replace_prompts(checkpoint_file, {key: embedding[token_ids(text)][:n_ctx] for key, text in texts.items()})

    [reading], printed = run_command(capsys, tmp_path, checkpoint_file, "--topk", "4")
    assert [c["layer"] for c in reading["text"]] == list(range(1 + len(deep)))
    assert reading["text"][0]["words"] == " ".join(PHRASE.split()[:n_ctx])
    assert all(c["words"] == " ".join(OTHER.split()[:n_ctx]) for c in reading["text"][1:])
    assert all(len(v["tokens"]) == 4 and v["distances"][0] < 1e-5 for c in reading["text"] for v in c["vectors"])
    assert set(reading["vision"]) == {"proj.weight", "proj.bias"} | {
        f"compound_prompt_projections.{i}.{p}" for i in range(len(deep)) for p in ("weight", "bias")}
    assert "Vision side, not decoded" in printed and "deep prompt at the input of layer 1" in printed


def test_official_layouts_read_with_the_backbone_given_on_the_command_line(embedding, tmp_path, capsys):
    # CoOp's official checkpoint is the prompt learner's own state dict; IVLP's keeps its deep prompts inside
    # CLIP's modules and, like every official trainer but CoOp's, saves the frozen CLIP too.
    coop = tmp_path / "coop" / "prompt_learner"
    save_checkpoint({"state_dict": {"ctx": context(embedding, PHRASE), "token_prefix": torch.zeros(3, 1, 64),
                                    "token_suffix": torch.zeros(3, 72, 64)}, "epoch": 50}, str(coop))
    [reading], _ = run_command(capsys, tmp_path, str(coop / "model.pth.tar-50"), "MODEL.BACKBONE.NAME", TINY)
    assert [c["words"] for c in reading["text"]] == [PHRASE] and reading["other"] == {}

    ivlp = tmp_path / "ivlp" / "VLPromptLearner"
    state = {"prompt_learner.ctx": context(embedding, PHRASE),
             "text_encoder.transformer.resblocks.1.VPT_shallow": context(embedding, OTHER),
             "image_encoder.VPT": torch.zeros(2, 64),
             "image_encoder.transformer.resblocks.1.VPT_shallow": torch.zeros(2, 64),
             "image_encoder.conv1.weight": torch.zeros(64, 3, 16, 16),
             "text_encoder.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(192, 64)}
    torch.save({"state_dict": state, "epoch": 5}, str(tmp_path / "ivlp.pth"))  # no digest, as official files
    ivlp.mkdir(parents=True)
    os.replace(tmp_path / "ivlp.pth", ivlp / "model.pth.tar-5")
    [reading], _ = run_command(capsys, tmp_path, str(ivlp / "model.pth.tar-5"), "MODEL.BACKBONE.NAME", TINY)
    assert [(c["key"], c["layer"], c["words"]) for c in reading["text"]] == [
        ("ctx", 0, PHRASE), ("text_deep_prompts.0", 1, OTHER)]
    assert reading["vision"] == {"vision_ctx": [2, 64], "vision_deep_prompts.0": [2, 64]} and reading["other"] == {}


def test_a_checkpoint_without_config_asks_for_the_backbone(embedding, tmp_path):
    folder = tmp_path / "prompt_learner"
    save_checkpoint({"state_dict": {"ctx": context(embedding, PHRASE)}, "epoch": 1}, str(folder))
    with pytest.raises(InputError, match="--config-file.*MODEL.BACKBONE.NAME"):
        interpret_prompts.main([str(folder / "model.pth.tar-1")])
    with pytest.raises(InputError, match="no checkpoint of epoch 7"):
        interpret_prompts.main([str(tmp_path), "--epoch", "7", "MODEL.BACKBONE.NAME", TINY])
