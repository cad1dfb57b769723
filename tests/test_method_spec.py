"""trainers/method.py: a method's declaration (MethodSpec) is checked when written, completed for trainers that
declare nothing, and what it names trainable is what gets frozen/unfrozen, optimized, counted and saved."""
import os

import pytest
import torch
import torch.nn as nn

from dassl.config import ConfigError
from dassl.utils import trainable_state_dict
from trainers.common import FixedTextLearner, PromptedCLIP, PromptTrainer, SpeedOptions
from trainers.method import (EPOCHS, FIT, NOTHING, PROTOCOLS, MethodSpec, freeze_all_but_trained, is_trained,
                             registered_specs, spec_of, trained_parameter_count)
from trainers_testutils import REPO, demo_args, demo_trainer, fp32_clip


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("fields,message", [
    ({"training": "steps"}, "training must be one of epochs, fit, nothing"),
    ({"precisions": ("fp8",)}, "precisions must be a non-empty subset"),
    ({"precisions": ()}, "precisions must be a non-empty subset"),
    ({"protocol_configs": {"b2n": "x"}}, r"unknown protocols \['b2n'\]"),
    ({"trained": "adapter"}, r"write \('adapter',\)"),
])
def test_a_wrong_declaration_fails_when_written(fields, message):
    with pytest.raises(ValueError, match=message):
        MethodSpec(**fields)


def test_default_config_per_protocol():
    spec = MethodSpec(default_config="base", protocol_configs={"xd": "cross", "fewshot": "shots"})
    assert [spec.config_for(p) for p in ("base2new", "xd", "dg", "fewshot", "zeroshot")] == \
        ["base", "cross", "cross", "shots", "base"]  # dg evaluates the xd source training
    assert MethodSpec(protocol_configs={"dg": "own"}).config_for("dg") == "own"
    with pytest.raises(ValueError, match="unknown protocol 'fs'"):
        spec.config_for("fs")


def test_a_trainer_without_spec_gets_the_defaults():
    class OfficialStyle:  # a Dassl-style trainer of another repository
        pass

    spec = spec_of(OfficialStyle)
    assert spec.trained == () and spec.training == EPOCHS and spec.transfers_to_unseen
    assert spec.config_dir == "OfficialStyle" and spec.precision_key == ""

    class NewPrompts(PromptTrainer):
        METHOD_KEY = "NEWPROMPTS"

    spec = spec_of(NewPrompts)
    assert spec.trained == ("prompt_learner",) and spec.precision_key == "TRAINER.NEWPROMPTS.PREC"
    with pytest.raises(TypeError, match="SPEC must be a trainers.method.MethodSpec"):
        spec_of(type("Bad", (), {"SPEC": {"trained": ()}}))


def test_built_in_declarations():
    specs = registered_specs()
    assert specs["ZeroshotCLIP"].training == NOTHING and specs["ZeroshotCLIP"].config_dir == "CoOp"
    assert specs["LinearProbeCLIP"].training == FIT and not specs["LinearProbeCLIP"].transfers_to_unseen
    assert not specs["LinearProbeCLIP"].distributed
    assert specs["MaPLe"].config_for("xd") == "vit_b16_c2_ep5_batch4_2ctx_cross_datasets"
    assert specs["CoOp"].precision_key == "TRAINER.COOP.PREC"
    # every default config a built-in declares is a file of its config folder
    for name, spec in specs.items():
        for protocol in PROTOCOLS:
            config = spec.config_for(protocol)
            if config:
                assert os.path.isfile(os.path.join(REPO, "configs/trainers", spec.config_dir, config + ".yaml")), \
                    (name, protocol, config)


def test_prefixes_match_whole_name_components():
    assert is_trained("adapter.fc.weight", ("adapter",)) and is_trained("adapter", ("adapter",))
    assert not is_trained("adapter2.weight", ("adapter",))
    assert is_trained("prompt_learner.ctx", ("head", "prompt_learner"))


class AdaptedCLIP(PromptedCLIP):
    """A fixed-text CLIP plus an image-feature adapter: a trained part that is not a prompt."""

    def __init__(self, clip_model, options):
        text = torch.nn.functional.normalize(torch.randn(3, clip_model.text_projection.shape[1]), dim=-1)
        super().__init__(clip_model, FixedTextLearner(text), options)
        width = clip_model.visual.output_dim
        self.adapter = nn.Sequential(nn.Linear(width, 4), nn.ReLU(), nn.Linear(4, width))


def test_a_declared_adapter_is_what_trains_and_is_saved():
    model = AdaptedCLIP(fp32_clip(), SpeedOptions())
    trainable = freeze_all_but_trained(model, ("adapter",), model.clip_model)
    assert trainable == ["adapter.0.weight", "adapter.0.bias", "adapter.2.weight", "adapter.2.bias"]
    assert not any(p.requires_grad for p in model.clip_model.parameters())
    parameters = dict(model.named_parameters())
    assert [k for k in trainable_state_dict(model) if k in parameters] == trainable  # no frozen weight saved


def test_freezing_names_what_is_wrong():
    model = AdaptedCLIP(fp32_clip(), SpeedOptions())
    with pytest.raises(ConfigError, match=r"trained parts \['head'\] that hold no parameter.*'adapter', 'clip_model'"):
        freeze_all_but_trained(model, ("adapter", "head"), model.clip_model)
    with pytest.raises(RuntimeError, match="CLIP weights would be trained"):
        freeze_all_but_trained(model, ("clip_model.ln_final",), model.clip_model)


@pytest.mark.parametrize("name,config", [("CoOp", "CoOp/tiny.yaml"), ("MaPLe", "MaPLe/tiny.yaml"),
                                         ("VPT", "VPT/tiny.yaml"), ("ZeroshotCLIP", "CoOp/tiny.yaml")])
def test_optimizer_and_count_follow_the_declaration(name, config, data_root, tmp_path):
    trainer = demo_trainer(name, config, data_root, str(tmp_path))
    learner_params = [p for p in trainer.model.prompt_learner.parameters()]
    expected = 0 if name == "ZeroshotCLIP" else sum(p.numel() for p in learner_params)
    assert trained_parameter_count(trainer) == expected
    if name != "ZeroshotCLIP":
        optimized = {id(p) for group in trainer.optim.param_groups for p in group["params"]}
        assert optimized == {id(p) for p in learner_params}


# The scripts' hand-written default configs before the declarations replaced them (scripts/lib.sh default_cfg).
FORMER_DEFAULTS = {
    ("xd", "MaPLe"): "vit_b16_c2_ep5_batch4_2ctx_cross_datasets",
    ("xd", "PromptSRC"): "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets",
    ("xd", "CoOp"): "vit_b16_ep50",
    ("fewshot", "PromptSRC"): "vit_b16_c2_ep50_batch4_4+4ctx_few_shot",
    "MaPLe": "vit_b16_c2_ep5_batch4_2ctx", "IVLP": "vit_b16_c2_ep5_batch4_2+2ctx", "VPT": "vit_b16_c2_ep5_batch4_4",
    "CoCoOp": "vit_b16_c4_ep10_batch1_ctxv1", "PromptSRC": "vit_b16_c2_ep20_batch4_4+4ctx", "CoOp": "vit_b16",
    "LinearProbeCLIP": "vit_b16", "ZeroshotCLIP": "vit_b16",
}


@pytest.mark.parametrize("protocol", ["base2new", "xd", "fewshot", "zeroshot"])
def test_scripts_default_configs_are_the_declared_ones(protocol, capsys):
    from scripts import methods

    for trainer in ("MaPLe", "IVLP", "VPT", "CoCoOp", "PromptSRC", "CoOp", "LinearProbeCLIP", "ZeroshotCLIP"):
        expected = FORMER_DEFAULTS.get((protocol, trainer), FORMER_DEFAULTS[trainer])
        assert methods.main(["default-config", protocol, trainer]) == 0
        assert capsys.readouterr().out.strip() == expected, (protocol, trainer)
    assert methods.main(["config-dir", "ZeroshotCLIP"]) == 0
    assert capsys.readouterr().out.strip() == "configs/trainers/CoOp"


def test_scripts_name_a_missing_default_config(capsys, monkeypatch):
    from scripts import methods

    assert methods.main(["default-config", "base2new", "NoSuchTrainer"]) == 2
    assert "unknown trainer 'NoSuchTrainer'" in capsys.readouterr().err
    monkeypatch.setattr(methods, "trainer_class", lambda name: type(name, (PromptTrainer,), {"METHOD_KEY": "X"}))
    assert methods.main(["default-config", "xd", "Fresh"]) == 2
    assert capsys.readouterr().err.strip() == ("scripts.methods: error: no default config for trainer 'Fresh' in "
                                               "protocol 'xd' (its SPEC declares none): set CFG (see "
                                               "configs/trainers/Fresh/)")


@pytest.mark.parametrize("name", ["TipAdapter", "LinearProbeCLIP"])
def test_a_one_process_method_refuses_a_multi_process_launch(name, data_root, tmp_path, monkeypatch, capsys):
    import train

    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)
    args = train.build_parser().parse_args(demo_args(name, f"{name}/tiny.yaml", data_root, str(tmp_path / "run"),
                                                     "DATASET.SUBSAMPLE_CLASSES", "all"))
    with pytest.raises(SystemExit) as stop:
        train.main(args)
    assert stop.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{name} runs in one process only" in line and "2 processes" in line and "without torchrun" in line
    assert not os.path.exists(tmp_path / "run")  # refused before the run folder or anything else was made


def test_a_distributed_method_passes_the_launch_check():
    from trainers import BUILT_IN_TRAINERS
    from trainers.method import check_launch

    check_launch(BUILT_IN_TRAINERS["CoOp"], 8)
    check_launch(BUILT_IN_TRAINERS["TipAdapter"], 1)
