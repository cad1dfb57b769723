"""Reading YAML config files, with `_BASE_` inheritance. Kept apart from dassl.config (and free of torch) so
that the shell scripts' small helpers (scripts/config_value.py) read a config the way train.py does, quickly;
dassl.config.merge_from_file turns a ConfigFileError into its ConfigError."""
import os.path as osp
from typing import Sequence

import yaml

BASE_KEY = "_BASE_"


class ConfigFileError(ValueError):
    """A config file that cannot be read or resolved; the message names the file and what to fix."""


def read_yaml_mapping(path: str, role: str = "config file") -> dict:
    """The mapping a YAML config file holds; ConfigFileError naming the file (and, for a syntax error, the line and
    column) when it is missing, unreadable, not YAML, empty or not a mapping of keys."""
    if not osp.isfile(path):
        raise ConfigFileError(f"{role} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
    except UnicodeDecodeError as e:
        raise ConfigFileError(f"{role} {path} is not UTF-8 text ({e.reason} at byte {e.start})") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigFileError(f"{role} {path}: YAML syntax error{where}: {problem}") from e
    if loaded is None:
        raise ConfigFileError(f"{role} {path} is empty; it must hold config keys such as OPTIM: {{MAX_EPOCH: 5}}")
    if not isinstance(loaded, dict):
        raise ConfigFileError(f"{role} {path} holds a {type(loaded).__name__}, not a mapping of config keys "
                              "(KEY: value lines)")
    return loaded


def _merged(base: dict, child: dict) -> dict:
    """`base` with `child`'s values over it, nested mappings merged key by key (a list or value replaces)."""
    result = dict(base)
    for key, value in child.items():
        result[key] = _merged(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) \
            else value
    return result


def read_config_file(path: str, role: str = "config file", _seen: Sequence[str] = ()) -> dict:
    """The mapping of a YAML config file, with the files it extends merged in: a top-level `_BASE_` names one
    file (or a list of files, merged in order) relative to this file's folder, whose values this file's
    override (as detectron2 / mmengine configs do). ConfigFileError naming the file for a missing base or a cycle."""
    loaded = read_yaml_mapping(path, role)
    bases = loaded.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigFileError(f"{role} {path}: {BASE_KEY} must name a YAML file or a list of them, got {bases!r}")
    chain = [*_seen, osp.abspath(path)]
    merged: dict = {}
    for base in bases:
        base_path = osp.normpath(osp.join(osp.dirname(path), base))
        if osp.abspath(base_path) in chain:
            raise ConfigFileError(f"{role} {path}: {BASE_KEY} {base!r} extends itself ({' -> '.join(chain)} -> "
                                  f"{osp.abspath(base_path)})")
        merged = _merged(merged, read_config_file(base_path, f"{BASE_KEY} file (of {path})", chain))
    return _merged(merged, loaded)


