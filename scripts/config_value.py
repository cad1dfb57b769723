"""Print one key of a trainer config as train.py would see it: the YAML value, overridden by ``KEY VALUE`` opts.

Used by the shell scripts to default ``LOADEP`` to the config's ``OPTIM.MAX_EPOCH`` (PROTOCOL.md §8 item 26:
the official cross-dataset test scripts hard-code an epoch that some configs never save)::

    python3 -m scripts.config_value configs/trainers/MaPLe/demo.yaml OPTIM.MAX_EPOCH --default 10 -- OPTIM.MAX_EPOCH 1
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Sequence

from dassl.config_files import read_config_file


def lookup(config_path: str, key: str, opts: Sequence[str] = ()) -> Optional[Any]:
    """The value of dotted ``key``: the last ``key VALUE`` pair in ``opts``, else the YAML's (its ``_BASE_`` files
    included), else None."""
    if len(opts) % 2:
        raise ValueError(f"Config overrides must be KEY VALUE pairs, got an odd number: {' '.join(opts)}")
    overrides = dict(zip(opts[0::2], opts[1::2]))
    if key in overrides:
        return overrides[key]
    node = read_config_file(config_path)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="trainer YAML file")
    parser.add_argument("key", help="dotted key, e.g. OPTIM.MAX_EPOCH")
    parser.add_argument("--default", help="printed when neither the opts nor the YAML set the key")
    argv = sys.argv[1:] if argv is None else argv
    # KEY VALUE overrides follow "--"; split them off by hand because argparse cannot place an
    # optional-length positional after the options reliably.
    opts = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    try:
        value = lookup(args.config, args.key, opts)
    except (OSError, ValueError) as error:
        print(f"config_value: {error}", file=sys.stderr)
        return 2
    if value is None:
        value = args.default
    if value is None:
        print(f"config_value: {args.key} is not set in {args.config} and no --default was given", file=sys.stderr)
        return 1
    print(value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
