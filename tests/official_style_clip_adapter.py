"""A CLIP-Adapter trainer written the way the official gaopengcuhk/CLIP-Adapter `clip_adapter.py` is written: a
Dassl `TrainerX` whose `CustomCLIP` runs the frozen image encoder, a two-layer bias-free bottleneck with ReLUs,
the residual mix at ratio 0.2, and the text encoder on the dataset's template at every forward; only the adapter
is given to the optimizer and registered (as `clip_adapter`). Loaded by tests/test_clip_adapter.py.

Registered as `OfficialStyleCLIPAdapter`. Two departures from the official file, both so that it runs on the
tests' tiny backbone and datasets: the adapter width is the backbone's embedding width (the official file writes
RN50's 1024), and a dataset without an entry in CUSTOM_TEMPLATES gets CLIP's generic template (the official
file raises KeyError). It reads the ratio and reduction from TRAINER.CLIP_ADAPTER like our trainer's config.
"""
import torch
import torch.nn as nn
from torch.nn import functional as F

from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import load_pretrained_weights

from clip import clip
from official_style_coop import load_clip_to_cpu

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
}


class Adapter(nn.Module):
    def __init__(self, c_in, reduction=4):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(c_in, c_in // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(c_in // reduction, c_in, bias=False),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.fc(x)


class TextEncoder(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        self.cfg = cfg
        self.classnames = classnames
        self.clip_model = clip_model
        self.dtype = clip_model.dtype

    def forward(self):
        template = CUSTOM_TEMPLATES.get(self.cfg.DATASET.NAME, "a photo of a {}.")
        prompts = [template.format(c.replace("_", " ")) for c in self.classnames]
        tokens = torch.cat([clip.tokenize(p) for p in prompts]).to(self.clip_model.logit_scale.device)
        return self.clip_model.encode_text(tokens)


class CustomCLIP(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(cfg, classnames, clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype
        self.ratio = cfg.TRAINER.CLIP_ADAPTER.RATIO
        width = clip_model.text_projection.shape[1]
        self.adapter = Adapter(width, cfg.TRAINER.CLIP_ADAPTER.REDUCTION).to(clip_model.dtype)

    def forward(self, image):
        image_features = self.image_encoder(image.type(self.dtype))
        x = self.adapter(image_features)

        ratio = self.ratio
        image_features = ratio * x + (1 - ratio) * image_features

        text_features = self.text_encoder()

        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)

        logit_scale = self.logit_scale.exp()
        return logit_scale * image_features @ text_features.t()


@TRAINER_REGISTRY.register()
class OfficialStyleCLIPAdapter(TrainerX):
    """CLIP-Adapter in the official file's shape."""

    def build_model(self):
        cfg = self.cfg
        classnames = self.dm.dataset.classnames

        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
        clip_model = load_clip_to_cpu(cfg)
        clip_model.float()

        print("Building custom CLIP")
        self.model = CustomCLIP(cfg, classnames, clip_model)

        print("Turning off gradients in both the image and the text encoder")
        for name, param in self.model.named_parameters():
            if "adapter" not in name:
                param.requires_grad_(False)

        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(self.model.adapter, cfg.MODEL.INIT_WEIGHTS)

        self.model.to(self.device)
        # only the adapter is optimised and saved
        self.optim = build_optimizer(self.model.adapter, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("clip_adapter", self.model.adapter, self.optim, self.sched)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        output = self.model(image)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)

        loss_summary = {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return loss_summary

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)
