"""Prompt-learning methods. Importing the package imports every module in it, so each trainer
registers itself in TRAINER_REGISTRY (a new method is a new file here plus a YAML in configs/trainers/)."""
from dassl.utils import import_submodules

import_submodules(__name__)

from dassl.engine import TRAINER_REGISTRY as _REGISTRY  # noqa: E402

# The built-in trainers before any --import module may take one of their names: their config keys (extend_cfg)
# stay defined then, so this project's configs still merge for an official file registered under the same name.
BUILT_IN_TRAINERS = dict(_REGISTRY.items())
