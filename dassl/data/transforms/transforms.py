"""`build_transform(cfg, is_train, choices)`: Dassl's train / test image pipelines.

The training pipeline's order is fixed by the builder, not by the order of INPUT.TRANSFORMS. With the method
configs (random_resized_crop, random_flip, normalize) it is RandomResizedCrop -> RandomHorizontalFlip ->
ToTensor -> Normalize; the test pipeline is always Resize(shorter edge) -> CenterCrop -> ToTensor (-> Normalize).
"""
import random
from typing import Optional, Sequence

import numpy as np
import torch
from torchvision.transforms import (
    AutoAugment,
    AutoAugmentPolicy,
    CenterCrop,
    ColorJitter,
    Compose,
    GaussianBlur,
    InterpolationMode,
    Normalize,
    RandAugment,
    RandomApply,
    RandomCrop,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToTensor,
)
from torchvision.transforms import functional as F

AVAI_CHOICES = [
    "random_flip",
    "random_resized_crop",
    "normalize",
    "instance_norm",
    "random_crop",
    "random_translation",
    "center_crop",  # accepted for compatibility; the test pipeline always center-crops
    "cutout",
    "imagenet_policy",
    "cifar10_policy",
    "svhn_policy",
    "randaugment",
    "randaugment_fixmatch",
    "randaugment2",
    "gaussian_noise",
    "colorjitter",
    "randomgrayscale",
    "gaussian_blur",
]
# Dassl-specific RandAugment variants that no prompt-learning config uses and this port does not provide.
UNSUPPORTED_CHOICES = ["randaugment_fixmatch", "randaugment2"]

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


class Random2DTranslation:
    """With probability `p`, enlarge to 1.125x and take a random (height, width) crop; else resize to it."""

    def __init__(self, height: int, width: int, p: float = 0.5, interpolation=InterpolationMode.BILINEAR) -> None:
        self.height = height
        self.width = width
        self.p = p
        self.interpolation = interpolation

    def __call__(self, img):
        if random.uniform(0, 1) > self.p:
            return F.resize(img, [self.height, self.width], interpolation=self.interpolation)
        new_width = int(round(self.width * 1.125))
        new_height = int(round(self.height * 1.125))
        resized = F.resize(img, [new_height, new_width], interpolation=self.interpolation)
        x1 = int(round(random.uniform(0, new_width - self.width)))
        y1 = int(round(random.uniform(0, new_height - self.height)))
        return F.crop(resized, y1, x1, self.height, self.width)


class Cutout:
    """Zero `n_holes` random squares of side `length` in a (C, H, W) tensor (centres drawn with NumPy)."""

    def __init__(self, n_holes: int = 1, length: int = 16) -> None:
        self.n_holes = n_holes
        self.length = length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.size(1), img.size(2)
        mask = np.ones((h, w), np.float32)
        for _ in range(self.n_holes):
            y, x = np.random.randint(h), np.random.randint(w)
            y1, y2 = np.clip(y - self.length // 2, 0, h), np.clip(y + self.length // 2, 0, h)
            x1, x2 = np.clip(x - self.length // 2, 0, w), np.clip(x + self.length // 2, 0, w)
            mask[y1:y2, x1:x2] = 0.0
        return img * torch.from_numpy(mask).to(img.dtype).expand_as(img)


class GaussianNoise:
    """With probability `p`, add N(mean, std) noise to a tensor image."""

    def __init__(self, mean: float = 0.0, std: float = 0.15, p: float = 0.5) -> None:
        self.mean = mean
        self.std = std
        self.p = p

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if random.uniform(0, 1) > self.p:
            return img
        return img + torch.randn(img.size()) * self.std + self.mean


class InstanceNormalization:
    """Normalise each channel of a (C, H, W) tensor by its own mean and standard deviation."""

    def __init__(self, eps: float = 1e-8) -> None:
        self.eps = eps

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        c = img.shape[0]
        flat = img.reshape(c, -1)
        mean = flat.mean(1).view(c, 1, 1)
        std = flat.std(1).view(c, 1, 1)
        return (img - mean) / (std + self.eps)


def _check_choices(choices: Sequence[str]) -> None:
    for choice in choices:
        if choice not in AVAI_CHOICES:
            raise ValueError(f"INPUT.TRANSFORMS: unknown transform {choice!r}; valid choices: {AVAI_CHOICES}")
        if choice in UNSUPPORTED_CHOICES:
            raise ValueError(
                f"INPUT.TRANSFORMS: {choice!r} is a Dassl transform this implementation does not provide;"
                f" use one of {[c for c in AVAI_CHOICES if c not in UNSUPPORTED_CHOICES]}"
            )


def _interpolation(cfg) -> InterpolationMode:
    name = cfg.INPUT.INTERPOLATION
    if name not in INTERPOLATION_MODES:
        raise ValueError(f"INPUT.INTERPOLATION must be one of {list(INTERPOLATION_MODES)}, but got {name!r}")
    return INTERPOLATION_MODES[name]


def _build_transform_train(cfg, choices: Sequence[str], normalize: Normalize) -> Compose:
    print("Building transform_train")
    interp = _interpolation(cfg)
    size = cfg.INPUT.SIZE
    steps = []
    if "random_crop" not in choices and "random_resized_crop" not in choices:
        print(f"+ resize to {size[0]}x{size[1]}")
        steps.append(Resize(size, interpolation=interp))
    if "random_translation" in choices:
        print("+ random translation")
        steps.append(Random2DTranslation(size[0], size[1]))
    if "random_crop" in choices:
        print(f"+ random crop (padding = {cfg.INPUT.CROP_PADDING})")
        steps.append(RandomCrop(size, padding=cfg.INPUT.CROP_PADDING))
    if "random_resized_crop" in choices:
        print(f"+ random resized crop (size={size}, scale={cfg.INPUT.RRCROP_SCALE})")
        steps.append(RandomResizedCrop(size, scale=cfg.INPUT.RRCROP_SCALE, interpolation=interp))
    if "random_flip" in choices:
        print("+ random flip")
        steps.append(RandomHorizontalFlip())
    for choice, policy in (
        ("imagenet_policy", AutoAugmentPolicy.IMAGENET),
        ("cifar10_policy", AutoAugmentPolicy.CIFAR10),
        ("svhn_policy", AutoAugmentPolicy.SVHN),
    ):
        if choice in choices:
            print(f"+ {choice.replace('_', ' ')}")
            steps.append(AutoAugment(policy))
    if "randaugment" in choices:
        n, m = cfg.INPUT.RANDAUGMENT_N, cfg.INPUT.RANDAUGMENT_M
        print(f"+ randaugment (n={n}, m={m})")
        steps.append(RandAugment(num_ops=n, magnitude=m))
    if "colorjitter" in choices:
        b, c, s, h = (cfg.INPUT.COLORJITTER_B, cfg.INPUT.COLORJITTER_C, cfg.INPUT.COLORJITTER_S, cfg.INPUT.COLORJITTER_H)
        print(f"+ color jitter (brightness={b}, contrast={c}, saturation={s}, hue={h})")
        steps.append(ColorJitter(brightness=b, contrast=c, saturation=s, hue=h))
    if "randomgrayscale" in choices:
        print(f"+ random gray scale (p={cfg.INPUT.RGS_P})")
        steps.append(RandomGrayscale(p=cfg.INPUT.RGS_P))
    if "gaussian_blur" in choices:
        print(f"+ gaussian blur (kernel={cfg.INPUT.GB_K})")
        steps.append(RandomApply([GaussianBlur(cfg.INPUT.GB_K)], p=cfg.INPUT.GB_P))
    print("+ to torch tensor of range [0, 1]")
    steps.append(ToTensor())
    if "cutout" in choices:
        print(f"+ cutout (n_holes={cfg.INPUT.CUTOUT_N}, length={cfg.INPUT.CUTOUT_LEN})")
        steps.append(Cutout(cfg.INPUT.CUTOUT_N, cfg.INPUT.CUTOUT_LEN))
    if "normalize" in choices:
        print(f"+ normalization (mean={cfg.INPUT.PIXEL_MEAN}, std={cfg.INPUT.PIXEL_STD})")
        steps.append(normalize)
    if "gaussian_noise" in choices:
        print(f"+ gaussian noise (mean={cfg.INPUT.GN_MEAN}, std={cfg.INPUT.GN_STD})")
        steps.append(GaussianNoise(cfg.INPUT.GN_MEAN, cfg.INPUT.GN_STD))
    if "instance_norm" in choices:
        print("+ instance normalization")
        steps.append(InstanceNormalization())
    return Compose(steps)


def _build_transform_test(cfg, choices: Sequence[str], normalize: Normalize) -> Compose:
    print("Building transform_test")
    interp = _interpolation(cfg)
    size = cfg.INPUT.SIZE
    print(f"+ resize the smaller edge to {max(size)}")
    print(f"+ {size[0]}x{size[1]} center crop")
    print("+ to torch tensor of range [0, 1]")
    steps = [Resize(max(size), interpolation=interp), CenterCrop(size), ToTensor()]
    if "normalize" in choices:
        print(f"+ normalization (mean={cfg.INPUT.PIXEL_MEAN}, std={cfg.INPUT.PIXEL_STD})")
        steps.append(normalize)
    if "instance_norm" in choices:
        print("+ instance normalization")
        steps.append(InstanceNormalization())
    return Compose(steps)


def build_transform(cfg, is_train: bool = True, choices: Optional[Sequence[str]] = None) -> Optional[Compose]:
    """The train (`is_train`) or test pipeline for INPUT.TRANSFORMS (or `choices`); None if INPUT.NO_TRANSFORM."""
    if cfg.INPUT.NO_TRANSFORM:
        print("Note: no transform is applied!")
        return None
    if choices is None:
        choices = cfg.INPUT.TRANSFORMS
    _check_choices(choices)
    normalize = Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    if is_train:
        return _build_transform_train(cfg, choices, normalize)
    return _build_transform_test(cfg, choices, normalize)
