"""Shared pytest set-up: the repository root on sys.path so `clip`, `dassl`, `datasets`, `trainers` import
as the project's own packages (ours shadow the `openai-clip` reference package, which the parity tests
import by file location)."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a CUDA GPU; on a machine without one they are skipped with that reason
    (benchmarks/gpu_check.sh runs them where a GPU is present)."""
    import pytest
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA GPU (torch.cuda.is_available() is False); run benchmarks/gpu_check.sh on one")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
