"""Shared pytest set-up: the repository root on sys.path so `clip`, `dassl`, `datasets`, `trainers` import
as the project's own packages (ours shadow the `openai-clip` reference package, which the parity tests
import by file location)."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a CUDA GPU; on a machine without one they are skipped with that reason
    (benchmarks/gpu_check.sh runs them where a GPU is present)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA GPU (torch.cuda.is_available() is False); run benchmarks/gpu_check.sh on one")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def cuda_math_flags():
    """The CUDA math flags that `set_cuda_math` writes, as (module, name) pairs, restored after the test.

    Restored by assignment, not by `monkeypatch.setattr`: torch serves these flags through the modules'
    `__getattr__` / descriptors, and pytest 9's monkeypatch undoes a patch of an attribute missing from the
    instance `__dict__` by deleting it, which leaves `torch.backends.cuda.matmul.allow_tf32` unreadable."""
    import torch

    flags = ((torch.backends.cudnn, "benchmark"), (torch.backends.cudnn, "deterministic"),
             (torch.backends.cudnn, "allow_tf32"), (torch.backends.cuda.matmul, "allow_tf32"))
    saved = [getattr(module, name) for module, name in flags]
    yield flags
    for (module, name), value in zip(flags, saved):
        setattr(module, name, value)


@pytest.fixture(scope="module")
def colors_root(tmp_path_factory):
    """A TinyColors tree (dassl_testutils.make_color_dataset: 3 classes, 8 pictures each) for a module's tests."""
    from dassl_testutils import make_color_dataset

    root = str(tmp_path_factory.mktemp("colors"))
    make_color_dataset(root, per_class=8, size=10)
    return root


@pytest.fixture
def exact_text(tmp_path_factory, monkeypatch):
    """The official-style comparisons' set-up: a download cache shared by the session's tests that use it (the
    random backbones written there are seeded by their names, so each is written once), and our text encoder
    without its exact truncation and prefix sharing, so that it runs the operations of the official-style text
    encoders (all 77 positions of every prompt); pass trainers_testutils.EXACT_TEXT too."""
    from clip import model as clip_model
    from clip.download import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path_factory.getbasetemp() / "exact_text_clip_cache"))
    monkeypatch.setattr(clip_model._truncation, "enabled", False)
    monkeypatch.setattr(clip_model._prefix_sharing, "enabled", False)
