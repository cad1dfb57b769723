"""`_BASE_` inheritance of YAML configs (dassl/config_files.py): a config names the file(s) it extends; the demo and
tiny configs use it, and every trainer config still resolves through train.py to the values recorded before."""
import glob
import json
import os

import pytest

from dassl.config import ConfigError, get_cfg_default, merge_from_file
from dassl.config_files import ConfigFileError, read_config_file
from resolved_configs import RECORD, ROOT, resolved_configs
from scripts.config_value import lookup


def write(path, text):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return str(path)


def test_every_trainer_config_resolves_to_its_recorded_values():
    with open(RECORD, encoding="utf-8") as handle:
        recorded = json.load(handle)
    now = resolved_configs()
    assert set(recorded) <= set(now), sorted(set(recorded) - set(now))
    changed = [name for name in recorded if now[name] != recorded[name]]
    assert not changed, changed


def test_official_configs_extend_nothing_and_demo_configs_do():
    for path in glob.glob(os.path.join(ROOT, "configs", "trainers", "*", "*.yaml")):
        text = open(path, encoding="utf-8").read()
        if os.path.basename(path).startswith(("demo", "tiny")):
            assert "_BASE_: ../../bases/" in text, path
        else:
            assert "_BASE_" not in text, path


def test_a_config_overrides_what_it_extends(tmp_path):
    write(tmp_path / "bases" / "root.yaml", "OPTIM:\n  LR: 0.1\n  MAX_EPOCH: 5\nINPUT:\n  TRANSFORMS: [a, b]\n")
    write(tmp_path / "bases" / "mid.yaml", "_BASE_: root.yaml\nOPTIM:\n  MAX_EPOCH: 7\n")
    write(tmp_path / "bases" / "other.yaml", "OPTIM:\n  NAME: adam\n")
    child = write(tmp_path / "t" / "m" / "c.yaml",
                  "_BASE_: [../../bases/mid.yaml, ../../bases/other.yaml]\nOPTIM:\n  LR: 0.2\nINPUT:\n  TRANSFORMS: [c]\n")
    assert read_config_file(child) == {"OPTIM": {"LR": 0.2, "MAX_EPOCH": 7, "NAME": "adam"}, "INPUT": {"TRANSFORMS": ["c"]}}
    cfg = get_cfg_default()
    merge_from_file(cfg, child)
    assert (cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.OPTIM.NAME) == (0.2, 7, "adam")
    assert lookup(child, "OPTIM.MAX_EPOCH") == 7  # what the scripts read for LOADEP


def test_bad_bases_are_named(tmp_path):
    missing = write(tmp_path / "a.yaml", "_BASE_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"_BASE_ file \(of .*a.yaml\) not found: .*nowhere.yaml"):
        merge_from_file(get_cfg_default(), missing, role="trainer config file")
    write(tmp_path / "x.yaml", "_BASE_: y.yaml\n")
    loop = write(tmp_path / "y.yaml", "_BASE_: x.yaml\n")
    with pytest.raises(ConfigFileError, match="extends itself"):
        read_config_file(loop)
    with pytest.raises(ConfigFileError, match="_BASE_ must name a YAML file or a list of them, got 3"):
        read_config_file(write(tmp_path / "n.yaml", "_BASE_: 3\n"))
