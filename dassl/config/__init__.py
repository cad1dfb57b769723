from yacs.config import CfgNode

from .defaults import _C as cfg_default
from dassl.config_files import read_config_file

from .merge import ConfigError, all_keys, merge_from_file, merge_from_list


def get_cfg_default() -> CfgNode:
    """A fresh, mutable copy of the Dassl defaults."""
    return cfg_default.clone()
