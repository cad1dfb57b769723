"""Prompt-learning methods. Importing the package imports every module in it, so each trainer
registers itself in TRAINER_REGISTRY (a new method is a new file here plus a YAML in configs/trainers/)."""
from dassl.utils import import_submodules

import_submodules(__name__)
