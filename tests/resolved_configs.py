"""The values every trainer YAML under configs/trainers/ resolves to through train.py's config path (only the
keys that differ from the defaults), and the JSON file that records them: tests/data/resolved_configs.json,
written from the configs before `_BASE_` inheritance replaced the copied sections of the demo/tiny configs
(test_config_inheritance.py checks that every config still resolves to them). After changing a config's values
on purpose: python tests/resolved_configs.py --write"""
from __future__ import annotations

import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD = os.path.join(ROOT, "tests", "data", "resolved_configs.json")


def resolved_configs() -> dict[str, dict]:
    """{"<trainer folder>/<name>.yaml": {dotted key: value that differs from the default}}."""
    sys.path.insert(0, ROOT)
    import train
    from dassl.engine.run_folder import config_values

    train.import_plugins([])
    defaults = config_values(train.setup_cfg(train.build_parser().parse_args([])))
    result = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "trainers", "*", "*.yaml"))):
        values = config_values(train.setup_cfg(train.build_parser().parse_args(["--config-file", path])))
        result[os.path.relpath(path, os.path.join(ROOT, "configs", "trainers"))] = {
            key: value for key, value in values.items() if defaults.get(key, "<absent>") != value}
    return result


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    configs = resolved_configs()
    # one key per line, values on it: small diffs when a config changes
    blocks = [f"{json.dumps(name)}: {{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(values.items()))
              + "\n}" for name, values in sorted(configs.items())]
    with open(RECORD, "w", encoding="utf-8") as handle:
        handle.write("{\n" + ",\n".join(blocks) + "\n}\n")
    print(f"wrote {RECORD}")
