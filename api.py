"""Python API: a trained prompt-learning run (or zero-shot CLIP) as an image classifier.

    from api import load_prompted_clip
    model = load_prompted_clip("output/base2new/train_base/caltech101/shots_16/PromptSRC/<cfg>/seed1",
                               ["airplane", "bonsai", "cat"])
    probs = model.predict_proba(["a.jpg", "b.jpg"])        # [2, 3]
    print(model.classify("a.jpg", topk=2))                  # [[("airplane", 0.91), ("cat", 0.05)]]

The model is built exactly as the trainer builds it for evaluation (same trainer class, config, checkpoint
loading and precision); images given as paths or PIL images get the config's test transform (resize,
centre crop, normalisation), tensors are taken as already preprocessed batches `[N, 3, H, W]`. Class names
default to those of the run's dataset; any list works for methods whose prompts are class-agnostic (CoOp,
MaPLe, IVLP, PromptSRC, VPT: base-to-novel uses exactly this), a class-specific CoOp (CSC) needs as many
classes as it was trained with.
"""
from __future__ import annotations

import contextlib
import io
import os
import os.path as osp
import re
import sys
from types import SimpleNamespace
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
from PIL import Image

import train
from dassl.config import ConfigError
from dassl.data.datasets import build_dataset
from dassl.data.transforms import build_transform
from dassl.engine import TRAINER_REGISTRY, plugins
from dassl.utils import read_image, to_rgb
from dassl.utils.errors import InputError, InputTypeError

ImageInput = Union[str, os.PathLike, Image.Image, torch.Tensor]
Images = Union[ImageInput, Sequence[ImageInput]]

# predict.py and the examples use this config for zero-shot CLIP (ViT-B/16, CoOp's evaluation settings)
ZERO_SHOT_CONFIG = osp.join(osp.dirname(osp.abspath(__file__)), "configs", "trainers", "CoOp", "vit_b16.yaml")
_EPOCH_FILE = re.compile(r"model\.pth\.tar-(\d+)")
_BEST_FILE = "model-best.pth.tar"


class PromptClassifier:
    """A built trainer's model in evaluation mode plus its test transform. Calls never record gradients."""

    def __init__(self, trainer, cfg, classnames: Sequence[str], checkpoint: Optional[str],
                 cuda_calls_on_cpu: bool = False):
        self.trainer = trainer
        self.cfg = cfg
        self.classnames = list(classnames)
        self.checkpoint = checkpoint  # the loaded file, None for zero-shot CLIP
        # a trainer file of another repository on the CPU: its own .cuda() calls must leave tensors here
        self.cuda_calls_on_cpu = cuda_calls_on_cpu
        with _quiet(verbose=False):
            self.transform = build_transform(cfg, is_train=False)
        trainer.set_model_mode("eval")

    @property
    def device(self) -> torch.device:
        return self.trainer.device

    def preprocess(self, images: Images) -> torch.Tensor:
        """[N, 3, H, W] batch: paths are read like the dataset loader reads them (8-bit RGB), paths and PIL
        images go through the test transform, tensors are used as they are."""
        items = [images] if _is_single(images) else list(images)
        if not items:
            raise InputError("no images given")
        tensors = []
        for item in items:
            if isinstance(item, torch.Tensor):
                if item.dim() not in (3, 4) or item.shape[-3] != 3:
                    raise InputError(f"image tensors must be [3, H, W] or [N, 3, H, W]; got shape {tuple(item.shape)}")
                tensors.extend(item.unsqueeze(0) if item.dim() == 3 else item)
                continue
            if isinstance(item, (str, os.PathLike)):
                item = read_image(os.fspath(item))
            elif not isinstance(item, Image.Image):
                raise InputTypeError(f"images must be paths, PIL images or tensors; got {type(item).__name__}")
            else:
                item = to_rgb(item)  # as read_image converts a file: 16-bit, 32-bit and float images scaled
            if self.transform is None:
                raise InputError("INPUT.NO_TRANSFORM is set, so images cannot be preprocessed: give tensors")
            tensors.append(self.transform(item))
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise InputError(f"images must be [3, H, W] tensors of one size after preprocessing; got shapes {shapes}")
        return torch.stack(tensors)

    @torch.no_grad()
    def logits(self, images: Images) -> torch.Tensor:
        """[N, n_classes] logits, computed in batches of DATALOADER.TEST.BATCH_SIZE like the evaluation."""
        batch = self.preprocess(images)
        size = max(1, self.cfg.DATALOADER.TEST.BATCH_SIZE)
        with plugins.cuda_calls_kept_on_cpu(self.cuda_calls_on_cpu):
            outputs = [self.trainer.model_inference(part.to(self.device)).float().cpu() for part in batch.split(size)]
        return torch.cat(outputs)

    __call__ = logits

    def predict_proba(self, images: Images) -> torch.Tensor:
        """[N, n_classes] softmax probabilities."""
        return self.logits(images).softmax(dim=-1)

    def classify(self, images: Images, topk: int = 5) -> List[List[Tuple[str, float]]]:
        """Per image, the `topk` most probable (class name, probability) pairs, best first."""
        if isinstance(topk, bool) or not isinstance(topk, int):
            raise InputTypeError(f"topk must be an int; got {type(topk).__name__}")
        if topk < 1:
            raise InputError(f"topk must be >= 1; got {topk}")
        probs = self.predict_proba(images)
        values, indices = probs.topk(min(topk, probs.shape[1]), dim=-1)
        return [[(self.classnames[i], float(p)) for p, i in zip(row_p.tolist(), row_i.tolist())]
                for row_p, row_i in zip(values, indices)]


# --------------------------------------------------------------------------------------------------------
# Loading


def load_prompted_clip(model_dir: str, classnames: Optional[Sequence[str]] = None, *, epoch: Optional[int] = None,
                       config_file: str = "", dataset_config_file: str = "", trainer: str = "",
                       opts: Sequence[str] = (), imports: Sequence[str] = (),
                       verbose: bool = False) -> PromptClassifier:
    """The model trained in the output folder `model_dir` (or exactly the checkpoint file `model_dir`, whose
    run config is that of the run folder it sits in: `<run>/<model name>/<file>`), for `classnames`.

    The config is the run's `config.yaml` (written by train.py); for runs without one, e.g. official
    releases, give the trainer and dataset YAML files of the run as `config_file` / `dataset_config_file`
    and the trainer's name as `trainer` (the scripts pass it on the command line, not in the YAML).
    `epoch` picks `model.pth.tar-<epoch>` (default: the checkpoint the run saved last); `opts` are
    KEY VALUE config overrides (e.g. ["USE_CUDA", "False"]). `classnames` default to the run's dataset's
    (which must then be present under DATASET.ROOT). `imports` are the modules the run was trained with
    `--import` (a trainer file of another repository), imported under train.py's rules.
    """
    run_dir, checkpoint_file = split_model_path(model_dir)
    if checkpoint_file and epoch is not None:
        raise InputError(f"{model_dir} names one checkpoint file, which is the one loaded; drop epoch={epoch} "
                         "(or give the run folder with epoch)")
    opts = [*(["TRAINER.NAME", trainer] if trainer else []), *opts]
    if config_file or dataset_config_file:
        cfg = build_config(config_file, dataset_config_file, opts, imports)
    else:
        run_config = osp.join(run_dir, train.CONFIG_FILE_NAME)
        if not osp.isfile(run_config):
            raise FileNotFoundError(
                f"{run_config} not found: {run_dir} is not an output folder of train.py (or predates config.yaml); "
                f"pass the run's trainer and dataset YAML files as config_file / dataset_config_file")
        cfg = build_config(run_config, "", opts, imports)
    on_cpu = plugins.keeps_cuda_calls_on_cpu(imports, cfg.USE_CUDA)
    if on_cpu:
        print(f"note: {plugins.CUDA_CALLS_NOTE}", file=sys.stderr)
    with plugins.cuda_calls_kept_on_cpu(on_cpu):
        trainer, classnames = _build(cfg, classnames, verbose, bool(imports))
        checkpoint = _load_weights(trainer, checkpoint_file or run_dir, epoch, classnames, verbose)
    return PromptClassifier(trainer, cfg, classnames, checkpoint, cuda_calls_on_cpu=on_cpu)


def zero_shot_clip(classnames: Sequence[str], *, config_file: str = ZERO_SHOT_CONFIG, dataset_config_file: str = "",
                   ensemble: bool = False, opts: Sequence[str] = (), verbose: bool = False) -> PromptClassifier:
    """Zero-shot CLIP with the backbone and transforms of `config_file`: the dataset's hand-written template
    (from `dataset_config_file`; "a photo of a {}." without one), or with `ensemble` the ZeroshotCLIP2
    template ensemble."""
    trainer_name = "ZeroshotCLIP2" if ensemble else "ZeroshotCLIP"
    cfg = build_config(config_file, dataset_config_file, ["TRAINER.NAME", trainer_name, *opts])
    trainer, classnames = _build(cfg, classnames, verbose)
    return PromptClassifier(trainer, cfg, classnames, None)


def dataset_classnames(cfg, verbose: bool = False) -> List[str]:
    """The class names of the config's dataset after DATASET.SUBSAMPLE_CLASSES, in label order."""
    try:
        with _quiet(verbose):
            return list(build_dataset(cfg).classnames)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(
            f"no class names given and the dataset {cfg.DATASET.NAME!r} could not be read from DATASET.ROOT "
            f"{cfg.DATASET.ROOT!r} ({e}); pass the class names, or the data root as opts DATASET.ROOT <path>") from e


def build_config(config_file: str = "", dataset_config_file: str = "", opts: Sequence[str] = (),
                 imports: Sequence[str] = ()):
    """The frozen config of train.py's merge path: defaults + method keys (+ the `extend_cfg` of the
    `imports` modules) -> dataset YAML -> trainer YAML -> KEY VALUE overrides."""
    args = ["--config-file", config_file, "--dataset-config-file", dataset_config_file,
            *(item for module in imports for item in ("--import", module)), *opts]
    train.import_plugins(list(imports))
    return train.setup_cfg(train.build_parser().parse_args(args))


def _check_classnames(classnames: Sequence[str]) -> List[str]:
    if isinstance(classnames, str):
        raise InputTypeError("classnames must be a list of names, not one string")
    if isinstance(classnames, (set, frozenset, dict)) or not hasattr(classnames, "__iter__"):
        # an unordered collection would give the labels an arbitrary order
        raise InputTypeError(f"classnames must be a list of names (in label order); got {type(classnames).__name__}")
    names = [str(name).strip() for name in classnames]
    if not names:
        raise InputError("the class-name list is empty")
    if any(not name for name in names):
        raise InputError(f"empty class name at position {names.index('')}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(f"duplicate class names: {duplicates}")
    return names


def _build(cfg, classnames: Optional[Sequence[str]], verbose: bool, imported: bool = False):
    """The config's trainer, built for `classnames` without any dataset loader."""
    try:
        train.check_registered("trainer", cfg.TRAINER.NAME, TRAINER_REGISTRY)
    except ConfigError as error:
        if imported:
            raise
        raise InputError(f"{error}; a run trained with a trainer file of its own (train.py --import MODULE) needs "
                         "that module here too: predict.py --import MODULE, or load_prompted_clip(..., "
                         "imports=[MODULE])") from error
    with _quiet(verbose):
        names = _check_classnames(dataset_classnames(cfg, verbose) if classnames is None else classnames)
        trainer_class = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
        inference_class = type(trainer_class.__name__, (_NoDataMixin, trainer_class), {"classnames": names})
        return inference_class(cfg), names


class _NoDataMixin:
    """Replaces the trainer's DataManager by the class names alone: the model and the evaluator need nothing
    else, and inference must not depend on the training data being present."""

    classnames: List[str] = []

    def build_data_loader(self) -> None:
        self.dm = SimpleNamespace(dataset=SimpleNamespace(classnames=self.classnames))
        self.train_loader_x = self.train_loader_u = self.val_loader = self.test_loader = None
        self.num_classes = len(self.classnames)
        self.num_source_domains = 1
        self.lab2cname = dict(enumerate(self.classnames))


def split_model_path(path: str) -> Tuple[str, Optional[str]]:
    """(run folder, checkpoint file or None) of an output folder or of a checkpoint file `<run>/<model name>/<file>`."""
    if osp.isdir(path):
        return path, None
    if osp.isfile(path):
        return osp.dirname(osp.dirname(osp.abspath(path))), path
    raise FileNotFoundError(f"model directory or checkpoint file not found: {path}")


def latest_epoch(folder: str) -> Optional[int]:
    """The epoch of the checkpoint a run saved last: the one its `checkpoint` pointer names (None for
    model-best.pth.tar), else the highest."""
    pointer = osp.join(folder, "checkpoint")
    if osp.isfile(pointer):
        with open(pointer) as f:
            name = f.readline().strip()
        if name == _BEST_FILE:
            return None
        match = _EPOCH_FILE.fullmatch(name)
        if match:
            return int(match.group(1))
    epochs = [int(m.group(1)) for m in map(_EPOCH_FILE.fullmatch, os.listdir(folder) if osp.isdir(folder) else [])
              if m]
    if not epochs:
        raise FileNotFoundError(f"no checkpoint (model.pth.tar-<epoch> or {_BEST_FILE}) in {folder}")
    return max(epochs)


def _load_weights(trainer, source: str, epoch: Optional[int], classnames: List[str], verbose: bool) -> Optional[str]:
    """Load the checkpoint file `source`, or the epoch-`epoch` checkpoint of the run folder `source` (default: the
    one saved last); returns the loaded file."""
    names = trainer.get_model_names()
    if not names:
        return None  # nothing learned (zero-shot CLIP)
    if osp.isfile(source):
        path = source
    else:
        if epoch is None:
            epoch = latest_epoch(osp.join(source, names[0]))
        path = osp.join(source, names[0], _BEST_FILE if epoch is None else f"model.pth.tar-{epoch}")
    try:
        with _quiet(verbose):
            trainer.load_model(source, epoch=epoch)
    except (KeyError, ValueError, RuntimeError) as e:
        raise InputError(f"the checkpoint {path} does not fit a {type(trainer).__name__} model for "
                         f"{len(classnames)} classes: {e}") from e
    return path


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Builders print their progress for log.txt; an API call stays silent unless asked."""
    if verbose:
        yield
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def _is_single(images: Images) -> bool:
    # a tensor is one image [3, H, W] or one batch [N, 3, H, W]
    return isinstance(images, (str, os.PathLike, Image.Image, torch.Tensor))
