"""Modules named with train.py's `--import`: trainer and dataset files from other repositories, imported so
that they register themselves, with three rules that let such a file run unchanged:

- A module may register a trainer or dataset under a built-in name (the official `CoOp`, `MaPLe`, ...): for
  this run it replaces the built-in, and one line says so, naming both files. Two imported modules
  registering one name is an error naming both files.
- A module may define a module-level `extend_cfg(cfg)` (what a repository's train.py has): `apply_config_hooks`
  runs it after the built-in keys, so it may add keys or redefine a default, type included.
- A dotted name whose package is one of ours (`trainers.x`) while another folder of that name on PYTHONPATH
  holds the module imports that folder's file (under the package name `<package>_from_<repository folder>`, so
  its relative imports stay inside its own folder), and says so: never silently this project's file.

And one for running them: files written for GPUs call `.cuda()` themselves; in a run on the CPU,
`cuda_calls_kept_on_cpu` makes those calls leave tensors and modules where they are, and says so.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType

import torch

from dassl.config import ConfigError
from dassl.utils import Registry
from dassl.utils.distributed import training_device


class PluginError(ConfigError):
    """An --import module that cannot be used as given (the message says why and what to do)."""


def _shown(path: str) -> str:
    """A path as messages show it: relative below the working folder, absolute elsewhere."""
    relative = os.path.relpath(path)
    return os.path.abspath(path) if relative.startswith(os.pardir) else relative


def _file_of(obj: object) -> str:
    try:
        return _shown(inspect.getfile(obj))
    except TypeError:
        return f"<{getattr(obj, '__module__', '?')}>"


@contextlib.contextmanager
def _registrations_checked(registries: Sequence[Registry]) -> Iterator[None]:
    """While plugins are imported: a name registered before (a built-in) may be replaced once, with a
    notice; a name registered by one plugin and then by another is a PluginError naming both files."""
    builtins = {id(registry): dict(registry.items()) for registry in registries}

    def on_duplicate(registry: Registry, name: str, old: object, new: object) -> None:
        kind = registry.name.lower()
        if builtins[id(registry)].get(name) is old:
            print(f"train.py: note: {kind} {name!r} of {_file_of(new)} replaces the built-in one of {_file_of(old)} "
                  "for this run", file=sys.stderr)
            return
        raise PluginError(f"two imported modules register the {kind} {name!r}: {_file_of(old)} and "
                          f"{_file_of(new)}; --import only one of them, or rename one class")

    for registry in registries:
        registry.duplicate_handler = on_duplicate
    try:
        yield
    finally:
        for registry in registries:
            registry.duplicate_handler = None


def _package_dirs(module: ModuleType) -> set[str]:
    return {os.path.realpath(path) for path in getattr(module, "__path__", [])}


def _module_file(folder: str, rest: str) -> str | None:
    base = os.path.join(folder, *rest.split("."))
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def _other_folders(package: str) -> list[str]:
    """Folders named `package` on sys.path other than the one the imported `package` comes from, in
    sys.path order; none when `package` is not imported (then Python's own resolution is unambiguous)."""
    ours = sys.modules.get(package)
    if ours is None:
        return []
    folders = []
    for entry in sys.path:
        folder = os.path.join(os.path.abspath(entry or os.curdir), package)
        if os.path.isdir(folder) and os.path.realpath(folder) not in _package_dirs(ours) and folder not in folders:
            folders.append(folder)
    return folders


def _our_file(package: str, rest: str) -> str | None:
    return next((found for folder in _package_dirs(sys.modules[package]) if (found := _module_file(folder, rest))),
                None)


def _import_from_folder(name: str, folder: str, found: str) -> ModuleType:
    """Import package.rest from `folder` under the package name `<package>_from_<repository folder>`."""
    package, _, rest = name.partition(".")
    repository = os.path.basename(os.path.dirname(os.path.realpath(folder)))
    alias = f"{package}_from_{re.sub(r'[^0-9A-Za-z_]', '_', repository)}"
    if alias not in sys.modules:
        init = os.path.join(folder, "__init__.py")
        spec = importlib.util.spec_from_file_location(
            alias, init if os.path.isfile(init) else None, submodule_search_locations=[folder])
        module = importlib.util.module_from_spec(spec)
        sys.modules[alias] = module
        if spec.loader is not None:
            spec.loader.exec_module(module)
    ours_file = _our_file(package, rest)
    instead = f", not this project's {_shown(ours_file)}" if ours_file else ""
    print(f"train.py: note: --import {name} imports {found}{instead} (as {alias}.{rest})", file=sys.stderr)
    return importlib.import_module(f"{alias}.{rest}")


def import_plugin(name: str) -> ModuleType:
    """Import the --import module `name` (see the module docstring for a dotted name of one of our packages)."""
    package, _, rest = name.partition(".")
    others = _other_folders(package) if rest else []
    for folder in others:
        found = _module_file(folder, rest)
        if found:
            return _import_from_folder(name, folder, found)
    if others:
        wanted = os.path.join(package, *rest.split(".")) + ".py"
        ours_file = _our_file(package, rest)
        hint = (f"; this project's {_shown(ours_file)} is imported by every run already (no --import "
                "needed)" if ours_file else "; check the module name")
        raise PluginError(f"--import {name}: no {wanted} in {', '.join(others)} (the other {package}/ folder on "
                          f"PYTHONPATH){hint}")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        missing = error.name or ""
        if name == missing or name.startswith(missing + "."):
            raise PluginError(f"--import {name}: module not found ({error}); is its folder on PYTHONPATH?") from error
        raise PluginError(f"--import {name}: the module imports {missing!r}, which is not found ({error}); install "
                          "it or put its folder on PYTHONPATH") from error


# --import name -> the module it imported (an aliased package's module is not in sys.modules under `name`)
_imported: dict[str, ModuleType] = {}


def import_plugins(names: Sequence[str], registries: Sequence[Registry]) -> None:
    """Import every --import module, in order, under the registration rules of `_registrations_checked`."""
    with _registrations_checked(registries):
        for name in names:
            _imported[name] = import_plugin(name)


def apply_config_hooks(cfg, names: Sequence[str]) -> None:
    """Run the module-level `extend_cfg(cfg)` of each --import module that has one, in --import order (after
    the built-in keys, so a hook may redefine a default, type included)."""
    for name in names:
        hook = getattr(_imported.get(name), "extend_cfg", None)
        if callable(hook):
            hook(cfg)


def _stay(self, *args, **kwargs):
    return self


def _is_cuda_device(value) -> bool:
    """Whether a `.to()` argument names a CUDA device ("cuda", "cuda:0", torch.device("cuda")); dtypes, tensors
    and other devices do not."""
    return isinstance(value, (str, torch.device)) and torch.device(value).type == "cuda"


def _tensor_to_kept_on_cpu(saved_to):
    """`Tensor.to` with a CUDA device (`x.to("cuda")`, the official CLIP-Adapter file's tokens) going to the CPU
    instead; dtype conversions and every other call are unchanged."""
    def to(self, *args, **kwargs):
        args = tuple("cpu" if _is_cuda_device(arg) else arg for arg in args)
        if _is_cuda_device(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return saved_to(self, *args, **kwargs)
    return to


def keeps_cuda_calls_on_cpu(imports: Sequence[str], use_cuda: bool) -> bool:
    """Whether a run with these --import modules and USE_CUDA needs `cuda_calls_kept_on_cpu`: it has imported
    modules and its device is the CPU."""
    return bool(imports) and training_device(use_cuda).type == "cpu"


CUDA_CALLS_NOTE = ("this run is on the CPU: .cuda() and .to('cuda') calls of imported modules leave tensors "
                   "and modules on the CPU")


@contextlib.contextmanager
def cuda_calls_kept_on_cpu(active: bool) -> Iterator[None]:
    """While it lasts (if `active`), `Tensor.cuda()` and `Module.cuda()` return their object unchanged and
    `Tensor.to("cuda")` goes to the CPU: a trainer file written for GPUs (the official VPT and PromptSRC files
    move their fixed text features and their frozen CLIP with `.cuda()`, the official CLIP-Adapter file its
    tokens with `.to('cuda')`) then runs unchanged on the CPU, where the model and the batches are.
    This project's own code never calls `.cuda()`. train.py, api.py and predict.py make it active for runs
    on the CPU with --import modules, and print CUDA_CALLS_NOTE once."""
    if not active:
        yield
        return
    saved = torch.Tensor.cuda, torch.nn.Module.cuda, torch.Tensor.to
    torch.Tensor.cuda, torch.nn.Module.cuda = _stay, _stay
    torch.Tensor.to = _tensor_to_kept_on_cpu(saved[2])
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda, torch.Tensor.to = saved
