"""Merging YAML files and `KEY VALUE` lists into a config, with errors a person can act on: an unknown key
names the closest valid keys, a wrong type names the key, the expected type and the value given."""
import difflib
import re
from typing import List, Sequence

from yacs.config import CfgNode

from dassl.config_files import ConfigFileError, read_config_file
from dassl.utils.errors import UserError

_TYPE_MISMATCH = re.compile(
    r"Type mismatch \(<class '(?P<expected>\w+)'> vs\. <class '(?P<got>\w+)'>\) "
    r"with values \((?P<default>.*) vs\. (?P<value>.*)\) for config key: (?P<key>\S+)"
)
_UNKNOWN_KEY = re.compile(r"Non-existent (?:config )?key: (?P<key>\S+)")


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be applied; the message says which key and why."""


def all_keys(cfg: CfgNode, prefix: str = "") -> List[str]:
    """Every leaf key of `cfg` as a dotted path."""
    keys = []
    for k, v in cfg.items():
        full_key = f"{prefix}{k}"
        if isinstance(v, CfgNode):
            keys.extend(all_keys(v, full_key + "."))
        else:
            keys.append(full_key)
    return keys


def _unknown_key_error(cfg: CfgNode, key: str, source: str) -> ConfigError:
    keys = all_keys(cfg)
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    if not close:
        # same last component under another node, e.g. OPTIM.MAX_EPOCHS -> OPTIM.MAX_EPOCH
        leaf = key.split(".")[-1]
        close = [k for k in keys if difflib.SequenceMatcher(None, leaf, k.split(".")[-1]).ratio() > 0.8][:3]
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return ConfigError(f"{source}: unknown config key {key}{hint}")


def _translate(err: Exception, cfg: CfgNode, source: str) -> ConfigError:
    message = str(err.args[0]) if err.args else str(err)
    unknown = _UNKNOWN_KEY.search(message)
    if unknown:
        return _unknown_key_error(cfg, unknown.group("key"), source)
    mismatch = _TYPE_MISMATCH.search(message)
    if mismatch:
        return ConfigError(
            f"{source}: config key {mismatch.group('key')} expects a value of type {mismatch.group('expected')}"
            f" (default {mismatch.group('default')}), got {mismatch.group('value')} of type {mismatch.group('got')}"
        )
    return ConfigError(f"{source}: {message}")


def merge_from_file(cfg: CfgNode, path: str, role: str = "config file") -> None:
    """cfg.merge_from_file(path) with `_BASE_` inheritance (`read_config_file`), raising ConfigError for a missing,
    malformed or empty file, an unknown key or a wrong type."""
    try:
        loaded = read_config_file(path, role)
    except ConfigFileError as e:
        raise ConfigError(str(e)) from e
    try:
        cfg.merge_from_other_cfg(CfgNode(loaded))
    except (KeyError, ValueError, AssertionError) as e:
        raise _translate(e, cfg, f"{role} {path}") from e


def merge_from_list(cfg: CfgNode, opts: Sequence[str]) -> None:
    """cfg.merge_from_list(opts) (`KEY VALUE` pairs; values parsed as Python literals), raising ConfigError for
    an odd number of items, an unknown key or a wrong type."""
    opts = list(opts)
    if len(opts) % 2 != 0:
        raise ConfigError(f"config overrides must be KEY VALUE pairs, got an odd number of items: {opts}")
    for key, value in zip(opts[0::2], opts[1::2]):
        try:
            cfg.merge_from_list([key, value])
        except (KeyError, ValueError, AssertionError) as e:
            raise _translate(e, cfg, "command-line override") from e
