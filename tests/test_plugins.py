"""--import modules from other repositories (dassl/engine/plugins.py): replacing a built-in trainer or dataset
name on purpose, two plugins claiming one name, a module-level extend_cfg, and dotted names of our packages
that another folder on PYTHONPATH also holds. In-process on copies of the registries; one train.py run end
to end."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import train
from dassl.config import get_cfg_default
from dassl.data.datasets import DATASET_REGISTRY
from dassl.engine import TRAINER_REGISTRY, plugins
from dassl.engine.plugins import PluginError
from trainers.config import extend_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGISTER_COOP = """
from dassl.engine import TRAINER_REGISTRY, TrainerX

@TRAINER_REGISTRY.register()
class CoOp(TrainerX):
    pass
"""


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A folder on sys.path for plugin files; the registries and sys.modules are restored afterwards."""
    train.import_plugins([])  # the built-ins are registered before any plugin, as in train.py
    for registry in (TRAINER_REGISTRY, DATASET_REGISTRY):
        monkeypatch.setattr(registry, "_obj_map", dict(registry._obj_map))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    monkeypatch.setattr(plugins, "_imported", {})
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _write(folder, relative, text):
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def _shown(path):
    relative = os.path.relpath(path)
    return os.path.abspath(path) if relative.startswith(os.pardir) else relative


def _import(*names):
    plugins.import_plugins(list(names), (TRAINER_REGISTRY, DATASET_REGISTRY))


def test_a_plugin_replaces_a_builtin_name_and_says_so_naming_both_files(sandbox, capsys):
    path = _write(sandbox, "their_coop.py", REGISTER_COOP)
    builtin = TRAINER_REGISTRY.get("CoOp")
    _import("their_coop")
    assert TRAINER_REGISTRY.get("CoOp").__module__ == "their_coop"
    notice = capsys.readouterr().err.strip()
    assert notice == (f"train.py: note: trainer 'CoOp' of {_shown(path)} replaces the built-in one of "
                      f"{_shown(sys.modules[builtin.__module__].__file__)} for this run")
    # outside --import the registry refuses a taken name, as Dassl's does
    with pytest.raises(KeyError, match='"CoOp" was already registered'):
        TRAINER_REGISTRY.register(type("CoOp", (), {}))


def test_two_plugins_registering_one_name_is_an_error_naming_both(sandbox):
    first = _write(sandbox, "first_coop.py", REGISTER_COOP)
    second = _write(sandbox, "second_coop.py", REGISTER_COOP)
    with pytest.raises(PluginError) as error:
        _import("first_coop", "second_coop")
    assert str(error.value) == (f"two imported modules register the trainer 'CoOp': {_shown(first)} and "
                                f"{_shown(second)}; --import only one of them, or rename one class")


def test_train_py_reports_two_plugins_for_one_name_in_one_line(tmp_path):
    for name in ("first_coop", "second_coop"):
        _write(tmp_path, f"{name}.py", REGISTER_COOP)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]))
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--import", "first_coop",
                             "--import", "second_coop", "--trainer", "CoOp"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"train.py: error: two imported modules register the trainer 'CoOp': {tmp_path / 'first_coop.py'} and "
        f"{tmp_path / 'second_coop.py'}; --import only one of them, or rename one class")


def test_module_level_extend_cfg_runs_after_the_builtin_keys_and_may_change_a_type(sandbox):
    _write(sandbox, "their_keys.py", """
        from yacs.config import CfgNode as CN

        def extend_cfg(cfg):
            cfg.TRAINER.COOP.CTX_INIT = False  # a bool in their repository, a string in ours
            cfg.TRAINER.THEIRS = CN()
            cfg.TRAINER.THEIRS.ALPHA = 0.5
        """)
    _import("their_keys")
    cfg = get_cfg_default()
    extend_cfg(cfg)
    plugins.apply_config_hooks(cfg, ["their_keys"])
    cfg.merge_from_list(["TRAINER.COOP.CTX_INIT", "True", "TRAINER.THEIRS.ALPHA", "0.25"])
    assert cfg.TRAINER.COOP.CTX_INIT is True and cfg.TRAINER.THEIRS.ALPHA == 0.25
    assert cfg.TRAINER.COOP.N_CTX == 16  # the built-in keys are still there


def test_dotted_name_held_by_another_trainers_folder_imports_that_file(sandbox, capsys):
    repo = sandbox / "their_repo"
    _write(repo, "trainers/__init__.py", "")
    _write(repo, "trainers/templates.py", "TEMPLATE = 'itap of a {}.'\n")
    theirs = _write(repo, "trainers/zsclip.py", """
        from dassl.engine import TRAINER_REGISTRY, TrainerX

        from .templates import TEMPLATE  # relative imports stay inside their folder

        @TRAINER_REGISTRY.register()
        class ZeroshotCLIP(TrainerX):
            template = TEMPLATE
        """)
    sys.path.append(str(repo))  # after ours, as with PYTHONPATH=their_repo python train.py
    _import("trainers.zsclip")
    trainer = TRAINER_REGISTRY.get("ZeroshotCLIP")
    assert trainer.__module__ == "trainers_from_their_repo.zsclip" and trainer.template == "itap of a {}."
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == (f"train.py: note: --import trainers.zsclip imports {theirs}, not this project's "
                        f"{_shown(os.path.join(ROOT, 'trainers', 'zsclip.py'))} "
                        "(as trainers_from_their_repo.zsclip)")
    assert lines[1].startswith("train.py: note: trainer 'ZeroshotCLIP' of ")

    with pytest.raises(PluginError, match=r"--import trainers.nowhere: no trainers/nowhere.py in .*their_repo"):
        _import("trainers.nowhere")


def test_missing_dependency_of_a_plugin_is_named(sandbox):
    _write(sandbox, "needs_timm.py", "import timm_is_not_installed_here\n")
    with pytest.raises(PluginError, match="--import needs_timm: the module imports 'timm_is_not_installed_here'"):
        _import("needs_timm")


def test_train_py_runs_a_plugin_that_replaces_coop_with_its_own_keys(tmp_path):
    """End to end: an official-style CoOp file registered as `CoOp`, with its repository's extend_cfg making
    CTX_INIT a bool, set to False by the YAML and the command line (a string default refuses both)."""
    _write(tmp_path, "their_coop.py", """
        from dassl.engine import TRAINER_REGISTRY
        from official_style_coop import OfficialStyleCoOp

        def extend_cfg(cfg):
            cfg.TRAINER.COOP.CTX_INIT = False

        @TRAINER_REGISTRY.register()
        class CoOp(OfficialStyleCoOp):
            pass
        """)
    # their repository's YAML has the bool too
    config = open(os.path.join(ROOT, "configs/trainers/CoOp/tiny.yaml")).read()
    assert 'CTX_INIT: ""' in config
    config = config.replace("_BASE_: ../../bases/", f"_BASE_: {ROOT}/configs/bases/")  # the copy lives elsewhere
    (tmp_path / "tiny_bool.yaml").write_text(config.replace('CTX_INIT: ""', "CTX_INIT: False"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.path.join(ROOT, "tests"), ROOT]),
               CLIP_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), "--import", "their_coop", "--trainer", "CoOp",
         "--root", str(tmp_path / "data"), "--output-dir", str(tmp_path / "out"), "--no-train",
         "--dataset-config-file", os.path.join(ROOT, "configs/datasets/demo.yaml"),
         "--config-file", str(tmp_path / "tiny_bool.yaml"),
         "TRAINER.COOP.CTX_INIT", "False", "DATASET.NUM_SHOTS", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train.py: note: trainer 'CoOp' of " in result.stderr and "their_coop.py replaces the built-in" in result.stderr
    assert "Initializing a generic context" in result.stdout  # the plugin's prompt learner, not ours
    assert "CTX_INIT: False" in result.stdout


def test_cuda_calls_are_kept_on_the_cpu_while_active_and_restored_after():
    saved = torch.Tensor.cuda, torch.nn.Module.cuda, torch.Tensor.to
    tensor, module = torch.ones(2), torch.nn.Linear(2, 2)
    with plugins.cuda_calls_kept_on_cpu(active=False):
        assert (torch.Tensor.cuda, torch.nn.Module.cuda, torch.Tensor.to) == saved
    with pytest.raises(ZeroDivisionError):
        with plugins.cuda_calls_kept_on_cpu(active=True):
            assert tensor.cuda() is tensor and tensor.cuda(0, non_blocking=True) is tensor
            assert module.cuda() is module and module.weight.device.type == "cpu"
            assert tensor.to("cuda").device.type == "cpu"
            assert tensor.to(device=torch.device("cuda:0")).device.type == "cpu"
            assert tensor.to("cuda", torch.float16).dtype == torch.float16
            1 / 0
    assert (torch.Tensor.cuda, torch.nn.Module.cuda, torch.Tensor.to) == saved


CUDA_CALLING_COOP = """
from dassl.engine import TRAINER_REGISTRY
from official_style_coop import OfficialStyleCoOp

@TRAINER_REGISTRY.register()
class CudaCallingCoOp(OfficialStyleCoOp):
    # what files written for GPUs do: move the model, and inputs inside forward, with .cuda()
    def build_model(self):
        super().build_model()
        self.model.cuda()
        forward = self.model.forward
        self.model.forward = lambda image, *args, **kwargs: forward(image.cuda(), *args, **kwargs)
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only behaviour: on a GPU machine .cuda() works")
def test_a_file_calling_cuda_trains_and_predicts_on_the_cpu(tmp_path):
    """train.py and predict.py keep an --import file's .cuda() calls on the CPU (saying so), and predict.py
    without the run's --import names it."""
    _write(tmp_path, "cuda_coop.py", CUDA_CALLING_COOP)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.path.join(ROOT, "tests"), ROOT]),
               CLIP_CACHE_DIR=str(tmp_path / "cache"))
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), "--import", "cuda_coop", "--trainer", "CudaCallingCoOp",
         "--root", str(tmp_path / "data"), "--output-dir", str(out),
         "--dataset-config-file", os.path.join(ROOT, "configs/datasets/demo.yaml"),
         "--config-file", os.path.join(ROOT, "configs/trainers/CoOp/tiny.yaml"),
         "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"train.py: note: {plugins.CUDA_CALLS_NOTE}" in result.stderr
    assert "accuracy:" in result.stdout

    image = next((tmp_path / "data" / "demo" / "images" / "circle").iterdir())
    predict = [sys.executable, os.path.join(ROOT, "predict.py"), "--model-dir", str(out), str(image), "--topk", "1"]
    result = subprocess.run(predict + ["--import", "cuda_coop"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"{image}: ") and f"note: {plugins.CUDA_CALLS_NOTE}" in result.stderr
    result = subprocess.run(predict, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "unknown trainer 'CudaCallingCoOp'" in result.stderr and "predict.py --import MODULE" in result.stderr
