"""Linear-probe CLIP: CoOp's `lpclip/` protocol as a trainer, so the scripts, the sweep and the tables run it like
every other method (docs/REPRODUCING.md, "Few-shot learning").

1. Image features of the frozen image encoder (`encode_image`: the projected features, not normalised) under
   the test transform, for the full train, val and test splits of the dataset, cached once per backbone,
   precision, transform, dataset and split in lpclip's own files (`<dir>/<DATASET.NAME>/{train,val,test}.npz`
   holding `feature_list` and `label_list`), so the official `linear_probe.py --feature_dir <dir>` runs on the
   very same features. A split whose images or labels changed is extracted again.
2. The training shots: `TRAINER.LINEAR_PROBE.SAMPLING lpclip` (default) draws them as lpclip does, from all
   training features (`np.random.seed(SEED)`, then per class, in label order, `np.random.choice(..., K,
   replace=False)`, then the validation shots the same way: 1->1, 2->2, 4->4, 8->4, 16->4 per class), which is
   how the published linear-probe numbers were made; `fewshot` takes the few-shot split the prompt methods train
   on (split_fewshot/shot_K-seed_S.pkl, val min(K, 4) per class), for a like-for-like comparison in this harness.
3. An L2-regularised multinomial logistic regression (scikit-learn's lbfgs, `max_iter` 1000, as lpclip), its
   inverse regularisation C searched on the validation shots as lpclip does: a coarse grid 1e6 ... 1e-6, then
   SEARCH_STEPS rounds of bisection in log10 space around the best grid value (ties keep the lower C); the
   classifier of the last round is the result, tested on the full test split.

The classifier (weights, biases, C and the training class names) is the checkpoint `linear_head/model.pth.tar-1`.
Evaluated on another dataset (`--eval-only --model-dir`), it classifies within that dataset's classes, which must
all be among its training classes (ImageNet-V2/-Sketch: the same 1000; ImageNet-A/-R: 200 of them, the domain
generalisation protocol of the KgCoOp repository); classes it never saw it cannot score, so it has no
base-to-novel or cross-dataset result.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm
from yacs.config import CfgNode as CN

from clip.bundled_models import BUNDLED_MODELS
from clip.download import sha256_of
from clip.model_files import MODEL_URLS
from clip.widened_models import WIDENED_MODELS
from dassl.config import ConfigError
from dassl.data import DatasetWrapper
from dassl.data.datasets import build_dataset
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.utils import write_bytes_atomic, write_json_atomic
from dassl.utils.distributed import evaluate_gathered
from dassl.utils.errors import InputError

from .common import Precision, check_input_size, check_precision, load_clip_model
from .method import FIT, MethodSpec

# lpclip's coarse grid of C (linear_probe.py), searched from the strongest regularisation's opposite end.
LPCLIP_C_GRID = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)
SAMPLINGS = ("lpclip", "fewshot")
SPLITS = ("train", "val", "test")
HEAD_NAME = "linear_head"


def validation_shots(shots: int) -> int:
    """lpclip's validation shots per class: {1: 1, 2: 2, 4: 4, 8: 4, 16: 4}, i.e. min(K, 4) (Dassl's rule too)."""
    return min(shots, 4)


# --------------------------------------------------------------------------------------------------------
# lpclip's feature files


def write_lpclip_features(path: str, features: np.ndarray, labels: np.ndarray) -> None:
    """`np.savez` with lpclip's keys, written atomically. Features float64 and labels int64, the dtypes lpclip's
    own files get from the Python lists it saves."""
    buffer = io.BytesIO()
    np.savez(buffer, feature_list=np.asarray(features, dtype=np.float64), label_list=np.asarray(labels, dtype=np.int64))
    write_bytes_atomic(path, buffer.getvalue())


def read_lpclip_features(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(features [N, D] float64, labels [N] int64) of an lpclip `.npz` file (ours or the official one)."""
    with np.load(path) as data:
        missing = [key for key in ("feature_list", "label_list") if key not in data.files]
        if missing:
            raise InputError(f"{path} is not an lpclip feature file: it lacks {missing} (it holds {data.files})")
        features, labels = np.asarray(data["feature_list"], dtype=np.float64), np.asarray(data["label_list"])
    if features.ndim != 2 or labels.shape != (features.shape[0],):
        raise InputError(f"{path}: feature_list {features.shape} and label_list {labels.shape} do not match")
    return features, labels.astype(np.int64)


class FeatureCache:
    """lpclip feature files of one dataset under one backbone / precision / transform key.

    `<FEATURE_DIR>/<tag>/<DATASET.NAME>/<split>.npz`, where `tag` names the backbone and precision and ends in a
    hash of everything that decides the features (the backbone's identity, the precision, the test transform);
    `<split>.json` next to each file records that key and a digest of the split's images (paths, sizes,
    modification times) and labels. A file is reused while both match; otherwise the split is extracted again
    and the file replaced.
    """

    def __init__(self, directory: str, key: dict):
        self.key = key
        self.directory = directory

    @classmethod
    def for_config(cls, cfg) -> "FeatureCache":
        key = feature_key(cfg)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        backbone = (cfg.MODEL.BACKBONE.PATH and os.path.basename(cfg.MODEL.BACKBONE.PATH)) or cfg.MODEL.BACKBONE.NAME
        tag = f"{backbone.replace('/', '-')}_{cfg.TRAINER.LINEAR_PROBE.PREC}_{digest}"
        root = cfg.TRAINER.LINEAR_PROBE.FEATURE_DIR or os.path.join(cfg.DATASET.ROOT or "./data", "clip_feat")
        return cls(os.path.join(os.path.abspath(os.path.expanduser(root)), tag, cfg.DATASET.NAME), key)

    @property
    def feature_dir(self) -> str:
        """What lpclip's `linear_probe.py --feature_dir` takes (its `--dataset` is DATASET.NAME)."""
        return os.path.dirname(self.directory)

    def path(self, split: str) -> str:
        return os.path.join(self.directory, f"{split}.npz")

    def features(self, split: str, items: Sequence, extract: Callable[[Sequence], np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(features, labels) of `items` (Datum objects, in order), from the cache or extracted and cached."""
        record = {"key": self.key, "split": split, "images": len(items), "items_sha256": items_digest(items)}
        meta_path = os.path.join(self.directory, f"{split}.json")
        try:
            with open(meta_path, encoding="utf-8") as handle:
                fresh = json.load(handle) == record
        except (OSError, ValueError):
            fresh = False
        if fresh and os.path.isfile(self.path(split)):
            features, labels = read_lpclip_features(self.path(split))
            if len(labels) == len(items):
                print(f"Features of the {split} split ({len(items):,} images) read from {self.path(split)}")
                return features, labels
        print(f"Extracting features of the {split} split ({len(items):,} images) into {self.path(split)}")
        features = extract(items)
        labels = np.array([item.label for item in items], dtype=np.int64)
        write_lpclip_features(self.path(split), features, labels)
        write_json_atomic(record, meta_path)  # last: a file without its record is never trusted
        return features, labels


def items_digest(items: Sequence) -> str:
    """A digest of the images (path, size, modification time) and labels of a split: a regenerated or replaced
    image file changes it without reading any image."""
    digest = hashlib.sha256()
    for item in items:
        stat = os.stat(item.impath)
        digest.update(f"{item.impath}\t{stat.st_size}\t{stat.st_mtime_ns}\t{item.label}\n".encode())
    return digest.hexdigest()


def feature_key(cfg) -> dict:
    """Everything that decides an image's features: the backbone's identity, the precision, the test transform."""
    backbone = cfg.MODEL.BACKBONE
    identity = {"name": backbone.NAME, "url": MODEL_URLS.get(backbone.NAME, "")}
    if backbone.PATH:
        identity = {"path": os.path.abspath(os.path.expanduser(backbone.PATH)),
                    "sha256": sha256_of(os.path.expanduser(backbone.PATH))}
    elif backbone.NAME in WIDENED_MODELS:  # derived from a shipped file, whose hash its URL does not carry
        identity["shipped"] = {name: model.sha256 for name, model in BUNDLED_MODELS.items()}
    test_input = cfg.INPUT
    transform = {"size": list(test_input.SIZE), "interpolation": test_input.INTERPOLATION,
                 "normalize": "normalize" in test_input.TRANSFORMS, "instance_norm": "instance_norm" in test_input.TRANSFORMS,
                 "mean": list(test_input.PIXEL_MEAN), "std": list(test_input.PIXEL_STD),
                 "no_transform": test_input.NO_TRANSFORM}
    return {"backbone": identity, "precision": cfg.TRAINER.LINEAR_PROBE.PREC, "test_transform": transform}


# --------------------------------------------------------------------------------------------------------
# Sampling and the C search (lpclip's linear_probe.py)


def sample_per_class(labels: np.ndarray, shots: int, state: np.random.RandomState, what: str) -> np.ndarray:
    """lpclip's draw: for each label in ascending order, `choice(indices of that label, shots, replace=False)`
    from `state` (np.random.seed(s) then np.random.choice is the same stream as RandomState(s).choice)."""
    picked = []
    for label in np.unique(labels):
        indices = np.where(labels == label)[0]
        if len(indices) < shots:
            raise InputError(f"{what}: class {label} has {len(indices)} images, fewer than the {shots} lpclip draws "
                             "without replacement; use TRAINER.LINEAR_PROBE.SAMPLING fewshot (which keeps all "
                             "images of such classes, as the prompt methods' few-shot split does)")
        picked.extend(state.choice(indices, size=shots, replace=False))
    return np.asarray(picked, dtype=np.int64)


@dataclass
class Classifier:
    """A fitted multinomial logistic regression: scores = features @ weight.T + bias, one row per class."""

    weight: np.ndarray  # [n_classes, D] float64
    bias: np.ndarray  # [n_classes]
    classes: np.ndarray  # the label of each row

    @classmethod
    def from_sklearn(cls, model) -> "Classifier":
        weight, bias = np.asarray(model.coef_, dtype=np.float64), np.asarray(model.intercept_, dtype=np.float64)
        if len(model.classes_) == 2 and weight.shape[0] == 1:
            # binary problems are one score s for the second class: [0, s] has the same argmax (ties: first)
            weight, bias = np.concatenate([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
        return cls(weight, bias, np.asarray(model.classes_))

    def scores(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weight.T + self.bias

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.classes[self.scores(features).argmax(axis=1)]


@dataclass
class SearchResult:
    C: float
    classifier: Classifier
    val_accuracy: float  # of the chosen C on the validation shots, in %
    trace: list = field(default_factory=list)  # (C, val accuracy %) of every fit, in order
    unconverged: int = 0  # fits that reached max_iter


def fit_logistic(features: np.ndarray, labels: np.ndarray, c: float, max_iter: int):
    """scikit-learn's L2-regularised multinomial logistic regression with lbfgs (lpclip's `LogisticRegression(
    solver="lbfgs", max_iter=1000, penalty="l2", C=c)`; L2 is the default penalty, spelled out no more since
    scikit-learn 1.8 deprecates the keyword). Returns (model, converged)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = LogisticRegression(solver="lbfgs", max_iter=max_iter, C=c).fit(features, labels)
    return model, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def search_c(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], grid: Sequence[float],
             steps: int, max_iter: int, log: Callable[[str], None] = print) -> SearchResult:
    """lpclip's search: the grid's best C by validation accuracy (the first best), then `steps` rounds that fit
    both ends of [C/10, 10 C], keep the better end (the left one on a tie) and halve the interval in log10
    space towards it. The kept classifier of the last round is the result (of the best grid value when
    steps is 0)."""
    val_x, val_y = val
    trace, unconverged = [], 0

    def fit(c: float):
        nonlocal unconverged
        model, converged = fit_logistic(*train, c, max_iter)
        unconverged += not converged
        correct = int((model.predict(val_x) == val_y).sum())
        trace.append((float(c), 100.0 * correct / len(val_y)))
        return model, correct

    fits = [fit(c) for c in grid]
    log("C search, coarse grid (C: val accuracy): "
        + ", ".join(f"{c:g}: {acc:.2f}%" for c, acc in trace))
    best = int(np.argmax([correct for _, correct in fits]))
    chosen, chosen_model, chosen_correct = grid[best], fits[best][0], fits[best][1]
    # lpclip's arithmetic, operation for operation, so that the same C values are fitted
    left, right = 1e-1 * grid[best], 1e1 * grid[best]
    for step in range(steps):
        (left_model, left_correct), (right_model, right_correct) = fit(left), fit(right)
        if left_correct < right_correct:
            chosen, chosen_model, chosen_correct = right, right_model, right_correct
            left, right = 0.5 * (np.log10(right) + np.log10(left)), np.log10(right)
        else:
            chosen, chosen_model, chosen_correct = left, left_model, left_correct
            left, right = np.log10(left), 0.5 * (np.log10(right) + np.log10(left))
        left, right = np.power(10, left), np.power(10, right)
        log(f"C search, round {step + 1}/{steps}: kept C {float(chosen):g} (val accuracy "
            f"{100.0 * chosen_correct / len(val_y):.2f}%), next interval [{float(left):g}, {float(right):g}]")
    return SearchResult(float(chosen), Classifier.from_sklearn(chosen_model), 100.0 * chosen_correct / len(val_y),
                        trace, unconverged)


# --------------------------------------------------------------------------------------------------------
# The trainer


class LinearHead(nn.Module):
    """The fitted classifier as the run's checkpoint: `weight` [n_classes, D] and `bias` (float64, as fitted),
    plus, as the module's extra state, the class names of its rows, the chosen C and its validation accuracy."""

    def __init__(self, n_classes: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_classes, dim, dtype=torch.float64))
        self.bias = nn.Parameter(torch.zeros(n_classes, dtype=torch.float64))
        self.classnames: list[str] = []
        self.info: dict = {}

    def set_classifier(self, classifier: Classifier, classnames: Sequence[str], info: dict) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.from_numpy(classifier.weight))
            self.bias.copy_(torch.from_numpy(classifier.bias))
        self.classnames, self.info = list(classnames), dict(info)

    def get_extra_state(self) -> dict:
        return {"classnames": list(self.classnames), **self.info}

    def set_extra_state(self, state: dict) -> None:
        state = dict(state)
        self.classnames = list(state.pop("classnames"))
        self.info = state

    @property
    def fitted(self) -> bool:
        return bool(self.classnames)

    def scores(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weight.detach().cpu().numpy().T + self.bias.detach().cpu().numpy()


@TRAINER_REGISTRY.register()
class LinearProbeCLIP(TrainerX):
    """CLIP's linear probe (CoOp's lpclip/ protocol); see the module docstring."""

    # What a generic harness needs to know about this method (trainers/method.py):
    # - trained: the registered head, fitted (no gradients) in one pass in the first epoch (OPTIM.MAX_EPOCH 1 in
    #   its configs); a run interrupted before its checkpoint restarts the fit from the cached features;
    # - it scores only classes it was trained on: no base-to-novel, no cross-dataset targets; domain
    #   generalisation targets only when all their classes are among its training classes;
    # - TRAINER.LINEAR_PROBE.PREC is the precision of the feature extraction (any of fp16 / fp32 / amp / bf16);
    #   the classifier is always fitted and applied in float64 by scikit-learn / numpy;
    # - one scikit-learn call in one process: no torchrun, no optimizer, no LR schedule.
    SPEC = MethodSpec(trained=(HEAD_NAME,), training=FIT, transfers_to_unseen=False,
                      precision_key="TRAINER.LINEAR_PROBE.PREC", default_config="vit_b16", distributed=False)

    @staticmethod
    def extend_cfg(cfg) -> None:
        cfg.TRAINER.LINEAR_PROBE = CN()
        cfg.TRAINER.LINEAR_PROBE.PREC = "fp16"  # of the feature extraction (lpclip: OpenAI's fp16 CLIP on GPU)
        cfg.TRAINER.LINEAR_PROBE.SAMPLING = "lpclip"  # lpclip (its own draw, the published numbers) or fewshot
        cfg.TRAINER.LINEAR_PROBE.C_GRID = list(LPCLIP_C_GRID)
        cfg.TRAINER.LINEAR_PROBE.SEARCH_STEPS = 8  # lpclip's linear_probe.sh: --num_step 8
        cfg.TRAINER.LINEAR_PROBE.MAX_ITER = 1000
        cfg.TRAINER.LINEAR_PROBE.FEATURE_DIR = ""  # "" = <DATASET.ROOT>/clip_feat

    def check_cfg(self, cfg) -> None:
        probe = cfg.TRAINER.LINEAR_PROBE
        check_precision(probe.PREC, self.SPEC.precision_key)
        if probe.SAMPLING not in SAMPLINGS:
            raise ConfigError(f"TRAINER.LINEAR_PROBE.SAMPLING must be one of {', '.join(SAMPLINGS)}; got {probe.SAMPLING!r}")
        numbers = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in probe.C_GRID)
        if not probe.C_GRID or not numbers or any(c <= 0 for c in probe.C_GRID):
            raise ConfigError("TRAINER.LINEAR_PROBE.C_GRID must list positive numbers (YAML reads 1e2 as text: write "
                              f"100.0 or 1.0e+2); got {list(probe.C_GRID)}")
        if probe.SEARCH_STEPS < 0 or probe.MAX_ITER < 1:
            raise ConfigError("TRAINER.LINEAR_PROBE.SEARCH_STEPS must be >= 0 and MAX_ITER >= 1; got "
                              f"{probe.SEARCH_STEPS} and {probe.MAX_ITER}")
        if cfg.DATASET.SUBSAMPLE_CLASSES != "all":
            raise ConfigError("LinearProbeCLIP scores only the classes it was trained on, so base-to-novel does not "
                              f"apply to it: DATASET.SUBSAMPLE_CLASSES must be 'all', got {cfg.DATASET.SUBSAMPLE_CLASSES!r}")
        if cfg.TEST.FINAL_MODEL == "best_val":
            raise ConfigError("LinearProbeCLIP chooses C on the validation shots itself and keeps that classifier: "
                              "TEST.FINAL_MODEL best_val does not apply to it (use last_step)")

    def build_model(self) -> None:
        cfg = self.cfg
        self.precision = Precision(cfg.TRAINER.LINEAR_PROBE.PREC, self.device, self.SPEC.precision_key)
        self.clip_model = load_clip_model(cfg, self.precision)
        check_input_size(cfg, self.clip_model)
        self.clip_model.to(self.device).eval().requires_grad_(False)
        classnames = self.dm.dataset.classnames
        self.head = LinearHead(len(classnames), self.clip_model.text_projection.shape[1])
        self.register_model(HEAD_NAME, self.head, None, None)
        # label of the trainer's dataset -> row of the head; the identity until a checkpoint of other classes loads
        self.rows = np.arange(len(classnames))
        self.cache = FeatureCache.for_config(cfg)

    # ---- features

    @torch.no_grad()
    def extract(self, items: Sequence) -> np.ndarray:
        """Features [N, D] (float64) of the images of `items`, in order, under the test transform."""
        loader = torch.utils.data.DataLoader(
            DatasetWrapper(self.cfg, list(items), transform=self.dm.tfm_test, is_train=False),
            batch_size=self.cfg.DATALOADER.TEST.BATCH_SIZE, shuffle=False, num_workers=self.cfg.DATALOADER.NUM_WORKERS,
            pin_memory=torch.cuda.is_available() and self.cfg.USE_CUDA)
        parts = []
        for batch in tqdm(loader, desc="features"):
            with self.precision.autocast():
                parts.append(self.clip_model.encode_image(self.to_device(batch["img"])).double().cpu().numpy())
        return np.concatenate(parts)

    def split_features(self, split: str, items: Sequence) -> tuple[np.ndarray, np.ndarray]:
        return self.cache.features(split, items, self.extract)

    def full_dataset(self):
        """The dataset with every training and validation image (no few-shot sampling), whose splits the cache
        holds: lpclip extracts the full splits and draws its shots from them."""
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATASET.NUM_SHOTS = -1
        cfg.VERBOSE = False
        return build_dataset(cfg)

    # ---- fitting

    def training_shots(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """(train features, labels), (val features, labels) of the configured sampling."""
        cfg, shots = self.cfg, self.cfg.DATASET.NUM_SHOTS
        full = self.full_dataset()
        if not full.val:
            raise InputError(f"{cfg.DATASET.NAME} has no validation split, which the C search needs; train the probe "
                             "on a dataset with one (the domain-generalisation variants are evaluation-only)")
        train_x, train_y = self.split_features("train", full.train_x)
        val_x, val_y = self.split_features("val", full.val)
        if cfg.TRAINER.LINEAR_PROBE.SAMPLING == "fewshot" or shots < 1:
            # the prompt methods' split (all images when NUM_SHOTS < 1), looked up in the full splits' features
            return (self.select(full.train_x, train_x, self.dm.dataset.train_x, "train"),
                    self.select(full.val, val_x, self.dm.dataset.val or full.val, "val"))
        if cfg.SEED < 0:
            raise ConfigError("lpclip's sampling draws with np.random.seed(SEED): give a seed (--seed S >= 0)")
        state = np.random.RandomState(cfg.SEED)
        train_index = sample_per_class(train_y, shots, state, f"{cfg.DATASET.NAME} train")
        val_index = sample_per_class(val_y, validation_shots(shots), state, f"{cfg.DATASET.NAME} val")
        print(f"lpclip sampling (seed {cfg.SEED}): {shots} training and {validation_shots(shots)} validation images "
              "per class from the full splits")
        return (train_x[train_index], train_y[train_index]), (val_x[val_index], val_y[val_index])

    @staticmethod
    def select(full_items: Sequence, features: np.ndarray, chosen: Sequence, split: str):
        """The features and labels of the `chosen` images among the full split's."""
        row = {item.impath: i for i, item in enumerate(full_items)}
        missing = [item.impath for item in chosen if item.impath not in row]
        if missing:
            raise InputError(f"{len(missing)} images of the few-shot {split} split are not in the dataset's full "
                             f"{split} split (first: {missing[0]}); is the few-shot cache of another copy of it?")
        index = np.array([row[item.impath] for item in chosen], dtype=np.int64)
        return features[index], np.array([item.label for item in chosen], dtype=np.int64)

    def run_epoch(self) -> None:
        """The whole fit, in the first epoch; later epochs (OPTIM.MAX_EPOCH > 1) keep the fitted classifier."""
        if self.head.fitted:
            return
        probe = self.cfg.TRAINER.LINEAR_PROBE
        train, val = self.training_shots()
        print(f"Fitting the linear probe on {len(train[1]):,} images ({len(np.unique(train[1]))} classes, "
              f"{train[0].shape[1]}-dim features; {len(val[1]):,} validation images); lpclip-format features in "
              f"{self.cache.feature_dir}")
        result = search_c(train, val, list(probe.C_GRID), probe.SEARCH_STEPS, probe.MAX_ITER)
        if result.unconverged:
            print(f"Note: {result.unconverged} of {len(result.trace)} fits stopped at MAX_ITER {probe.MAX_ITER} "
                  "before lbfgs converged (lpclip keeps such fits too)")
        classnames = self.dm.dataset.classnames
        full_classifier = self.complete(result.classifier, len(classnames))
        self.head.set_classifier(full_classifier, classnames, {"C": result.C, "val_accuracy": result.val_accuracy,
                                                               "sampling": probe.SAMPLING})
        print(f"Chosen C = {result.C:g} (validation accuracy {result.val_accuracy:.2f}%)")
        self.write_scalar("train/C", result.C, 0)

    @staticmethod
    def complete(classifier: Classifier, n_classes: int) -> Classifier:
        """One row per label 0..n-1; a class without training images (only possible with fewshot sampling of a
        dataset missing images) never wins."""
        if list(classifier.classes) == list(range(n_classes)):
            return classifier
        weight = np.zeros((n_classes, classifier.weight.shape[1]))
        bias = np.full(n_classes, -np.inf)
        weight[classifier.classes], bias[classifier.classes] = classifier.weight, classifier.bias
        return Classifier(weight, bias, np.arange(n_classes))

    # ---- evaluation

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        """Load a fitted head and map this run's classes to its rows (by class name)."""
        for name, model_path, checkpoint in self.checkpoints_to_load(directory, epoch):
            state = checkpoint["state_dict"]
            extra = state.get("_extra_state")
            if not isinstance(extra, dict) or "weight" not in state:
                raise InputError(f'"{model_path}" is not a LinearProbeCLIP checkpoint (no fitted head in it)')
            head = LinearHead(*state["weight"].shape)
            head.load_state_dict(state)
            self.head = self._models[name] = head
            print(f'Loading weights to {name} from "{model_path}" (epoch = {checkpoint["epoch"]}, C = '
                  f'{extra.get("C", float("nan")):g}, {len(head.classnames)} classes)')
            self.rows = self.class_rows(head.classnames, self.dm.dataset.classnames, model_path)

    @staticmethod
    def class_rows(trained: Sequence[str], wanted: Sequence[str], source: str) -> np.ndarray:
        """Row of the head for each wanted class name; a name the head was not trained on is an error."""
        position = {name: i for i, name in enumerate(trained)}
        unseen = [name for name in wanted if name not in position]
        if unseen:
            raise InputError(f"LinearProbeCLIP ({source}) scores only the {len(trained)} classes it was trained on; "
                             f"{len(unseen)} of the {len(wanted)} classes here are not among them (first: "
                             f"{unseen[:3]}). A linear probe has no weights for unseen classes: it applies to "
                             "datasets whose classes are its own or a subset (ImageNet -> V2, Sketch, A, R)")
        return np.array([position[name] for name in wanted], dtype=np.int64)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """[N, this run's classes] float64 scores of the head's rows for this run's classes."""
        return self.head.scores(features)[:, self.rows]

    @torch.no_grad()
    def test(self, split: Optional[str] = None) -> float:
        """Evaluate from the cached features of `split` (TEST.SPLIT by default; "val" falls back to test)."""
        if not self.head.fitted:
            raise InputError("LinearProbeCLIP has no fitted classifier to test: train it, or give --eval-only "
                             "--model-dir a LinearProbeCLIP run")
        split = split or self.cfg.TEST.SPLIT
        dataset = self.dm.dataset
        if split != "val" or not dataset.val:
            split = "test"
        self.evaluator.reset()
        print(f"Evaluate on the *{split}* set")
        if split == "val":  # the trainer's validation images (few-shot ones), not the cached full split
            items = dataset.val
            features = self.extract(items)
        else:
            items = dataset.test
            features, _ = self.split_features(split, items)
        labels = torch.tensor([item.label for item in items])
        self.evaluator.process(torch.from_numpy(self.scores(features)), labels)
        results = evaluate_gathered(self.evaluator)
        for key, value in results.items():
            self.write_scalar(f"{split}/{key}", value, self.epoch)
        return list(results.values())[0]

    @torch.no_grad()
    def model_inference(self, image: torch.Tensor) -> torch.Tensor:
        """Scores of preprocessed images (predict.py, api.py): features of the frozen encoder, then the head."""
        with self.precision.autocast():
            features = self.clip_model.encode_image(image).double().cpu().numpy()
        return torch.from_numpy(self.scores(features))

    def set_model_mode(self, mode: str = "train", names=None) -> None:
        super().set_model_mode(mode, names)
        self.clip_model.eval()  # frozen, never in training mode
