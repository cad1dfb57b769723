"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022; gaopengcuhk/Tip-Adapter `main.py`, `utils.py`): a
key-value cache of the few-shot training features added to zero-shot CLIP's logits.

    keys    K [N, D]: the training images' features, averaged over AUGMENT_EPOCH augmented passes, normalised
    values  V [N, C]: their one-hot labels
    logits  = 100 * f @ W^T + alpha * exp(-beta * (1 - f @ K^T)) @ V        (f: normalised test features,
                                                                           W: normalised zero-shot classifier)

Tip-Adapter (`TipAdapter`) is training-free: the cache is built in the first epoch and (alpha, beta) searched on
the validation images, the official `search_hp`: beta over i * (SEARCH_SCALE[0] - 0.1) / SEARCH_STEP[0] + 0.1 for
i < SEARCH_STEP[0], alpha likewise with index 1, beta outer, alpha inner, the first best accuracy kept.
Tip-Adapter-F (`TipAdapterF`) trains the keys (the official `adapter.weight`, initialised to K) with the
cross-entropy of the logits at (INIT_ALPHA, INIT_BETA): AdamW (eps ADAMW_EPS) and a cosine LR over every
iteration of OPTIM.MAX_EPOCH epochs, each step on the features of a freshly augmented batch, then searches
(alpha, beta) with the trained keys.

The classifier W is the one of the official dataset files: the dataset's CoOp template, for ImageNet the mean of
the seven IMAGENET_TEMPLATES_SELECT features. The factor 100 is the official constant (CLIP's temperature), on
which the configured alpha ranges are set. Everything after the frozen encoders is computed in fp32.

Differences from the official pipeline (docs/REPRODUCING.md): data come from this harness (CoOp's few-shot split,
DATASET.NUM_SHOTS, and its validation split of min(K, 4) images per class, where the official code searches on
the full validation split and, for ImageNet, on the test set); the augmentation is INPUT.* (the configs set the
official crop scale 0.5-1); Tip-Adapter-F keeps its last epoch (the official code keeps the epoch with the best
test accuracy); under fp16 the keys stay fp32 master tensors (official: fp16).

Classes the cache has no entry for (novel classes, other datasets) get no cache logits: there Tip-Adapter is
zero-shot CLIP. The cache keeps its class names and matches them to the classes of the run that evaluates it.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from dassl.config import ConfigError
from dassl.data.data_manager import build_data_loader
from dassl.engine import TRAINER_REGISTRY
from dassl.metrics import compute_accuracy
from dassl.utils.errors import InputError

from .common import FixedTextLearner, PromptedCLIP, PromptTrainer, SpeedOptions, encode_class_templates, l2_normalize
from .imagenet_templates import IMAGENET_TEMPLATES_SELECT
from .method import EPOCHS, FIT, MethodSpec
from .zsclip import dataset_template

CLIP_LOGIT_SCALE = 100.0  # the official `100. * features @ clip_weights`
CACHE_NAME = "cache_model"


# --------------------------------------------------------------------------------------------------------
# The cache model's arithmetic


def cache_logits(features: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, beta: float) -> torch.Tensor:
    """exp(-beta * (1 - f @ K^T)) @ V, written as the official `((-1) * (beta - beta * affinity)).exp() @ V`."""
    affinity = features @ keys.t()
    return ((-1) * (beta - beta * affinity)).exp() @ values


def tip_logits(features: torch.Tensor, text: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, alpha: float,
               beta: float) -> torch.Tensor:
    """Zero-shot logits plus alpha times the cache logits, in fp32 with autocast off."""
    with torch.autocast(features.device.type, enabled=False):
        features, text, keys, values = features.float(), text.float(), keys.float(), values.float()
        return CLIP_LOGIT_SCALE * features @ text.t() + cache_logits(features, keys, values, beta) * alpha


def search_grid(scale: float, steps: int) -> list[float]:
    """The official candidate values: i * (scale - 0.1) / steps + 0.1 for i = 0 .. steps - 1."""
    return [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]


@torch.no_grad()
def search_alpha_beta(features: torch.Tensor, labels: torch.Tensor, text: torch.Tensor, keys: torch.Tensor,
                      values: torch.Tensor, scales: Sequence[float], steps: Sequence[int]) -> tuple[float, float, float]:
    """(beta, alpha, accuracy %) of the official search on (features, labels): beta outer, alpha inner, the first
    setting of the highest accuracy (the official loop replaces its best only on a strictly higher one). The
    zero-shot logits and the affinities are computed once; the counts stay on the device until the end."""
    betas, alphas = search_grid(scales[0], steps[0]), search_grid(scales[1], steps[1])
    with torch.autocast(features.device.type, enabled=False):
        features, text, keys, values = features.float(), text.float(), keys.float(), values.float()
        clip_logits = CLIP_LOGIT_SCALE * features @ text.t()
        affinity = features @ keys.t()
        counts = torch.zeros(len(betas), len(alphas), dtype=torch.long, device=features.device)
        for i, beta in enumerate(betas):
            cache = ((-1) * (beta - beta * affinity)).exp() @ values
            for j, alpha in enumerate(alphas):
                counts[i, j] = ((clip_logits + cache * alpha).argmax(dim=1) == labels).sum()
    best = int(counts.flatten().argmax())  # the first maximum in beta-outer, alpha-inner order
    i, j = divmod(best, len(alphas))
    return betas[i], alphas[j], 100.0 * float(counts[i, j]) / len(labels)


# --------------------------------------------------------------------------------------------------------
# The model


class CacheModel(nn.Module):
    """Keys [N, D] (a parameter: Tip-Adapter-F trains it), their labels, (alpha, beta), and the class names the
    labels index (extra state). `set_classes` maps those names to the columns of the classes being scored."""

    def __init__(self, labels: torch.Tensor, classnames: Sequence[str], width: int, alpha: float, beta: float):
        super().__init__()
        self.keys = nn.Parameter(torch.zeros(len(labels), width))
        self.register_buffer("labels", labels.clone().long())
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.register_buffer("beta", torch.tensor(float(beta)))
        self.register_buffer("values", torch.zeros(0), persistent=False)
        self.classnames = list(classnames)
        self.built = False  # keys filled from the training features (saved: a resumed run does not rebuild them)
        self.set_classes(classnames)

    def get_extra_state(self) -> dict:
        return {"classnames": list(self.classnames), "built": self.built}

    def set_extra_state(self, state: dict) -> None:
        self.classnames, self.built = list(state["classnames"]), bool(state["built"])

    def set_classes(self, classnames: Sequence[str]) -> None:
        """One-hot values [N, len(classnames)]: a key of a class absent from `classnames` has a zero row."""
        column = {name: i for i, name in enumerate(classnames)}
        targets = torch.tensor([column.get(self.classnames[label], -1) for label in self.labels.tolist()],
                               dtype=torch.long)
        values = torch.zeros(len(targets), len(classnames))
        known = targets >= 0
        values[torch.nonzero(known).flatten(), targets[known]] = 1.0
        self.values = values.to(self.labels.device)

    def resize_like(self, state: dict) -> None:
        """Take the key and label shapes of a checkpoint's cache (another run's few-shot set) before loading it."""
        with torch.no_grad():
            self.keys = nn.Parameter(torch.zeros_like(state["keys"], device=self.keys.device),
                                     requires_grad=self.keys.requires_grad)
        self.labels = torch.zeros_like(state["labels"], device=self.labels.device)


class TipAdapterCLIP(PromptedCLIP):
    """Frozen CLIP, the zero-shot classifier (fixed text features) and the cache."""

    def __init__(self, clip_model: nn.Module, text_features: torch.Tensor, cache: CacheModel, options: SpeedOptions):
        super().__init__(clip_model, FixedTextLearner(text_features), options)
        self.cache_model = cache

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """Normalised fp32 image features of the frozen encoder."""
        return self.features(image)[0]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features, text = self.features(image)
        cache = self.cache_model
        return tip_logits(features, text, cache.keys, cache.values, float(cache.alpha), float(cache.beta))


# --------------------------------------------------------------------------------------------------------
# The trainers


class _TipAdapterBase(PromptTrainer):
    METHOD_KEY = "TIP_ADAPTER"
    MODEL_NAME = CACHE_NAME

    @staticmethod
    def extend_cfg(cfg) -> None:
        if "TIP_ADAPTER" in cfg.TRAINER:
            return  # both trainers share the node (the official code runs both from one config)
        cfg.TRAINER.TIP_ADAPTER = CN()
        cfg.TRAINER.TIP_ADAPTER.PREC = "fp16"  # the official code runs OpenAI's fp16 CLIP
        cfg.TRAINER.TIP_ADAPTER.AUGMENT_EPOCH = 10  # augmented passes averaged into the cache keys
        cfg.TRAINER.TIP_ADAPTER.INIT_ALPHA = 1.0
        cfg.TRAINER.TIP_ADAPTER.INIT_BETA = 1.0
        cfg.TRAINER.TIP_ADAPTER.SEARCH_HP = True
        cfg.TRAINER.TIP_ADAPTER.SEARCH_SCALE = [7.0, 3.0]  # [beta, alpha] upper ends (official per dataset)
        cfg.TRAINER.TIP_ADAPTER.SEARCH_STEP = [200, 20]
        cfg.TRAINER.TIP_ADAPTER.ADAMW_EPS = 1e-4  # Tip-Adapter-F's AdamW eps

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        node = cfg.TRAINER.TIP_ADAPTER
        if node.AUGMENT_EPOCH < 1:
            raise ConfigError(f"TRAINER.TIP_ADAPTER.AUGMENT_EPOCH must be >= 1; got {node.AUGMENT_EPOCH}")
        if len(node.SEARCH_SCALE) != 2 or len(node.SEARCH_STEP) != 2 or min(node.SEARCH_STEP) < 1:
            raise ConfigError("TRAINER.TIP_ADAPTER.SEARCH_SCALE and SEARCH_STEP are [beta, alpha] pairs, steps >= 1; "
                              f"got {list(node.SEARCH_SCALE)} and {list(node.SEARCH_STEP)}")

    def templates(self) -> list[str]:
        """The official dataset files' templates: ImageNet's seven, else the dataset's CoOp template."""
        if self.cfg.DATASET.NAME == "ImageNet":
            return list(IMAGENET_TEMPLATES_SELECT)
        return [dataset_template(self.cfg.DATASET.NAME)]

    def build_custom_clip(self, clip_model: nn.Module, classnames: Sequence[str]) -> PromptedCLIP:
        node = self.method_cfg
        templates = self.templates()
        print(f"Prompt templates: {templates}")
        options = SpeedOptions.from_cfg(self.cfg)
        text_features = encode_class_templates(clip_model, classnames, templates, options)
        # predict.py and the API build a trainer without a training set: the checkpoint then sizes the cache
        train_x = getattr(self.dm.dataset, "train_x", [])
        labels = torch.tensor([item.label for item in train_x], dtype=torch.long)
        cache = CacheModel(labels, classnames, text_features.shape[1], node.INIT_ALPHA, node.INIT_BETA)
        return TipAdapterCLIP(clip_model, text_features, cache, options)

    def registered_module(self) -> nn.Module:
        return self.model.cache_model

    # ---- features

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():
            return self.model.clip_model.encode_image(image).float()

    @torch.no_grad()
    def build_cache(self) -> None:
        """Keys: the mean over AUGMENT_EPOCH augmented passes (in the few-shot set's order) of the training
        images' features, normalised; the official `build_cache_model`."""
        node, train_x = self.method_cfg, self.dm.dataset.train_x
        loader = build_data_loader(self.cfg, "SequentialSampler", train_x, self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE,
                                   tfm=self.dm.tfm_train, is_train=False)
        total = 0
        for augment in range(node.AUGMENT_EPOCH):
            print(f"Cache: augmented pass {augment + 1}/{node.AUGMENT_EPOCH} over {len(train_x)} training images")
            total = total + torch.cat([self.encode(self.to_device(batch["img"])) for batch in loader])
        keys = l2_normalize(total / node.AUGMENT_EPOCH)
        cache = self.model.cache_model
        cache.keys.data.copy_(keys)
        cache.built = True

    @torch.no_grad()
    def validation_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.val_loader is None:
            raise InputError(f"{self.cfg.DATASET.NAME} has no validation split, which the alpha/beta search of "
                             "Tip-Adapter needs; set TRAINER.TIP_ADAPTER.SEARCH_HP False to keep INIT_ALPHA/INIT_BETA")
        features, labels = [], []
        for batch in self.val_loader:
            features.append(l2_normalize(self.encode(self.to_device(batch["img"]))))
            labels.append(self.to_device(batch["label"]))
        return torch.cat(features), torch.cat(labels)

    def search(self) -> None:
        """The official `search_hp` on the validation images, with the cache's current keys."""
        node, cache = self.method_cfg, self.model.cache_model
        if not node.SEARCH_HP:
            return
        features, labels = self.validation_features()
        text, _ = self.model.class_side()
        beta, alpha, accuracy = search_alpha_beta(features, labels, text, cache.keys.detach(), cache.values,
                                                  node.SEARCH_SCALE, node.SEARCH_STEP)
        cache.alpha.fill_(alpha)
        cache.beta.fill_(beta)
        print(f"Searched on {len(labels)} validation images: beta {beta:.2f}, alpha {alpha:.2f} (accuracy "
              f"{accuracy:.2f}%)")
        self.write_scalar("train/alpha", alpha, self.epoch)
        self.write_scalar("train/beta", beta, self.epoch)

    # ---- evaluation

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        """Load a cache (of any few-shot set) and match its classes to this run's by name."""
        for name, model_path, checkpoint in self.checkpoints_to_load(directory, epoch):
            state = checkpoint["state_dict"]
            if "keys" not in state or "labels" not in state:
                raise InputError(f'"{model_path}" is not a Tip-Adapter checkpoint (no cache keys in it)')
            cache = self._models[name]
            print(f'Loading weights to {name} from "{model_path}" (epoch = {checkpoint["epoch"]})')
            cache.resize_like(state)
            cache.load_state_dict(state)
            cache.set_classes(self.dm.dataset.classnames)


@TRAINER_REGISTRY.register()
class TipAdapter(_TipAdapterBase):
    """Training-free Tip-Adapter: the cache and the search, in the first epoch (OPTIM.MAX_EPOCH 1)."""

    SPEC = MethodSpec(trained=(CACHE_NAME,), training=FIT, config_dir="TipAdapter", distributed=False)

    def build_optimization(self, params: list[nn.Parameter]) -> tuple:
        return None, None  # nothing is optimised

    def run_epoch(self) -> None:
        if self.model.cache_model.built:
            return
        self.build_cache()
        self.search()


@TRAINER_REGISTRY.register()
class TipAdapterF(_TipAdapterBase):
    """Tip-Adapter-F: the cache keys fine-tuned, then the search."""

    SPEC = MethodSpec(trained=(CACHE_NAME,), training=EPOCHS, config_dir="TipAdapterF", distributed=False)

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        if cfg.OPTIM.NAME != "adamw":
            raise ConfigError(f"TipAdapterF trains with AdamW as the official code does: OPTIM.NAME must be 'adamw'; "
                              f"got {cfg.OPTIM.NAME!r}")

    def build_optimization(self, params: list[nn.Parameter]) -> tuple:
        """The official AdamW (LR, weight decay, eps) and cosine annealing to 0 over every training iteration."""
        optim_cfg = self.cfg.OPTIM
        optim = torch.optim.AdamW(params, lr=optim_cfg.LR, weight_decay=optim_cfg.WEIGHT_DECAY,
                                  betas=(optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2), eps=self.method_cfg.ADAMW_EPS)
        # predict.py and the API have no training loader: their scheduler is never stepped
        iterations = max(optim_cfg.MAX_EPOCH * len(self.train_loader_x or ()), 1)
        return optim, torch.optim.lr_scheduler.CosineAnnealingLR(optim, iterations)

    def before_train(self) -> None:
        super().before_train()  # resumes a run whose checkpoint holds the keys built (and trained) so far
        if not self.model.cache_model.built:
            self.build_cache()

    def training_loss(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        node, cache = self.method_cfg, self.model.cache_model
        features = l2_normalize(self.encode(image))
        text, _ = self.model.class_side()
        logits = tip_logits(features, text, cache.keys, cache.values, node.INIT_ALPHA, node.INIT_BETA)
        return F.cross_entropy(logits, label), logits

    def forward_backward(self, batch: dict) -> dict:
        image, label = self.parse_batch_train(batch)
        loss, logits = self.training_loss(image, label)
        self.precision.backward_and_step(loss, self.optim)
        self.sched.step()  # per iteration, as the official scheduler
        return {"loss": loss.detach(), "acc": compute_accuracy(logits, label)[0]}

    def after_epoch(self) -> None:
        if self.epoch + 1 == self.max_epoch:
            self.search()  # before the last checkpoint is written, so it holds the searched alpha and beta
        super().after_epoch()
