"""Registries, config defaults and merge order, override parsing and config errors."""
import pytest
import yaml

from dassl.config import ConfigError, get_cfg_default, merge_from_file, merge_from_list
from dassl.utils import Registry, check_availability, import_submodules


def test_registry_registers_by_class_name_and_rejects_duplicates():
    reg = Registry("THING")

    @reg.register()
    class Alpha:
        pass

    assert reg.get("Alpha") is Alpha
    assert reg.registered_names() == ["Alpha"]
    with pytest.raises(KeyError, match="already registered"):
        reg.register(type("Alpha", (), {}))
    replacement = type("Alpha", (), {})
    reg.register(replacement, force=True)
    assert reg.get("Alpha") is replacement
    with pytest.raises(KeyError, match=r"Beta.*registered names:.*Alpha"):
        reg.get("Beta")


def test_check_availability_names_choices_and_closest():
    check_availability("MaPLe", ["CoOp", "MaPLe"])
    with pytest.raises(ValueError, match=r"\['CoCoOp', 'CoOp', 'MaPLe'\], but got \[Maple\] \(do you mean \[MaPLe\]\?\)"):
        check_availability("Maple", ["CoOp", "CoCoOp", "MaPLe"])


def test_import_submodules_imports_sorted_package_modules():
    names = import_submodules("dassl.metrics")
    assert names == ["dassl.metrics.accuracy"]


def test_defaults_match_dassl():
    cfg = get_cfg_default()
    assert cfg.OUTPUT_DIR == "./output" and cfg.SEED == -1 and cfg.USE_CUDA and cfg.VERBOSE
    assert cfg.INPUT.SIZE == (224, 224) and cfg.INPUT.INTERPOLATION == "bilinear"
    assert cfg.OPTIM.NAME == "adam" and cfg.OPTIM.LR == 0.0003 and cfg.OPTIM.STEPSIZE == (-1,)
    assert cfg.OPTIM.WARMUP_CONS_LR == 1e-5 and cfg.OPTIM.WARMUP_RECOUNT is True
    assert cfg.DATALOADER.NUM_WORKERS == 4 and cfg.DATALOADER.TEST.SAMPLER == "SequentialSampler"
    assert cfg.TEST.FINAL_MODEL == "last_step" and cfg.TRAIN.PRINT_FREQ == 10
    assert cfg.TRAINER.MIXMATCH.RAMPUP == 20000 and cfg.TRAINER.DDAIG.CLAMP_MIN == -1.0
    # a copy: mutating one does not change the next
    cfg.OPTIM.LR = 1.0
    assert get_cfg_default().OPTIM.LR == 0.0003


def _yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_merge_order_dataset_then_trainer_then_opts(tmp_path):
    cfg = get_cfg_default()
    dataset_yaml = _yaml(tmp_path / "d.yaml", {"DATASET": {"NAME": "X"}, "OPTIM": {"MAX_EPOCH": 3, "LR": 0.1}})
    trainer_yaml = _yaml(
        tmp_path / "t.yaml",
        {"OPTIM": {"MAX_EPOCH": 5, "WARMUP_CONS_LR": "1e-5"}, "INPUT": {"TRANSFORMS": ["random_flip"]}},
    )
    merge_from_file(cfg, dataset_yaml)
    merge_from_file(cfg, trainer_yaml)
    merge_from_list(cfg, ["OPTIM.MAX_EPOCH", "7", "INPUT.SIZE", "(32, 32)", "DATASET.NAME", "base"])
    assert cfg.OPTIM.MAX_EPOCH == 7
    assert cfg.OPTIM.LR == 0.1  # only the dataset file set it
    assert cfg.OPTIM.WARMUP_CONS_LR == 1e-5 and isinstance(cfg.OPTIM.WARMUP_CONS_LR, float)  # "1e-5" string parsed
    assert cfg.INPUT.TRANSFORMS == ("random_flip",)  # list coerced to the default's tuple
    assert cfg.INPUT.SIZE == (32, 32)
    assert cfg.DATASET.NAME == "base"  # not a Python literal: stays a string


def test_unknown_key_error_suggests_closest(tmp_path):
    cfg = get_cfg_default()
    with pytest.raises(ConfigError, match=r"unknown config key OPTIM\.MAX_EPOCHS; did you mean OPTIM\.MAX_EPOCH"):
        merge_from_list(cfg, ["OPTIM.MAX_EPOCHS", "3"])
    bad_yaml = _yaml(tmp_path / "bad.yaml", {"OPTIM": {"LRR": 0.1}})
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key OPTIM\.LRR; did you mean OPTIM\.LR"):
        merge_from_file(cfg, bad_yaml)


def test_type_mismatch_and_odd_overrides_and_missing_file(tmp_path):
    cfg = get_cfg_default()
    with pytest.raises(ConfigError, match=r"OPTIM\.MAX_EPOCH expects a value of type int \(default 10\), got abc of type str"):
        merge_from_list(cfg, ["OPTIM.MAX_EPOCH", "abc"])
    with pytest.raises(ConfigError, match="odd number"):
        merge_from_list(cfg, ["OPTIM.MAX_EPOCH"])
    with pytest.raises(ConfigError, match=r"not found: .*nope\.yaml"):
        merge_from_file(cfg, str(tmp_path / "nope.yaml"))
