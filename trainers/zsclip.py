"""Zero-shot CLIP: one hand-written template per dataset (ZeroshotCLIP) or an ensemble of templates
(ZeroshotCLIP2). Nothing is trained; the precision is TRAINER.COOP.PREC (the zero-shot script uses the
CoOp configs)."""
import torch

from dassl.engine import TRAINER_REGISTRY, TrainerX

from .common import (FixedTextLearner, Precision, PromptedCLIP, SpeedOptions, check_input_size, check_precision,
                     encode_class_templates, load_clip_model)
from .imagenet_templates import IMAGENET_TEMPLATES_SELECT
from .method import NOTHING, MethodSpec

CUSTOM_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}
# Datasets without an entry (e.g. new or demo datasets) use CLIP's generic template.
DEFAULT_TEMPLATE = "a photo of a {}."


def dataset_template(dataset_name: str) -> str:
    return CUSTOM_TEMPLATES.get(dataset_name, DEFAULT_TEMPLATE)


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(TrainerX):
    # Nothing is trained; it runs on CoOp's configs, as in the official zsclip script.
    SPEC = MethodSpec(trained=(), training=NOTHING, precision_key="TRAINER.COOP.PREC", config_dir="CoOp",
                      default_config="vit_b16")

    def check_cfg(self, cfg) -> None:
        check_precision(cfg.TRAINER.COOP.PREC, self.SPEC.precision_key, self.SPEC.precisions)

    def templates(self) -> list[str]:
        return [dataset_template(self.cfg.DATASET.NAME)]

    def build_model(self) -> None:
        cfg = self.cfg
        self.precision = Precision(cfg.TRAINER.COOP.PREC, self.device, self.SPEC.precision_key)
        clip_model = load_clip_model(cfg, self.precision)
        check_input_size(cfg, clip_model)
        clip_model.to(self.device)
        classnames = self.dm.dataset.classnames
        templates = self.templates()
        print(f"Prompt templates: {templates}")
        options = SpeedOptions.from_cfg(cfg)
        text_features = encode_class_templates(clip_model, classnames, templates, options)
        self.model = PromptedCLIP(clip_model, FixedTextLearner(text_features), options).to(self.device).eval()
        self.model.requires_grad_(False)

    def model_inference(self, image: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():
            return self.model(image)


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(ZeroshotCLIP):
    """Prompt ensembling: the mean of the normalised features of IMAGENET_TEMPLATES_SELECT, plus the dataset's
    own template for datasets other than ImageNet."""

    def templates(self) -> list[str]:
        # A fresh list per trainer (the official code appends to the shared class attribute, PROTOCOL §8 #21).
        templates = list(IMAGENET_TEMPLATES_SELECT)
        if self.cfg.DATASET.NAME != "ImageNet":
            templates.append(dataset_template(self.cfg.DATASET.NAME))
        return templates
