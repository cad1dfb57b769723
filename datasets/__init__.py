"""Benchmark datasets. Importing the package imports every module in it, so each dataset registers
itself in DATASET_REGISTRY (a new dataset is a new file here plus a YAML in configs/datasets/)."""
from dassl.utils import import_submodules

import_submodules(__name__)
