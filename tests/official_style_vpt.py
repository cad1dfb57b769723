"""A VPT trainer written the way the official MaPLe repository's `trainers/vpt.py` is written: the model is
built with `{"trainer": "VPT", ...}` (CLIP owns its deep vision prompts, named VPT / VPT_shallow) and always
cast to fp32, the text side is the fixed "a photo of a <class>." features computed once, and the forward
takes an explicit `training` flag. tests/test_official_style_maple_family.py checks that it gives the logits
of trainers/vpt.py.

Registered as `OfficialStyleVPT`; configured by TRAINER.VPT.*. The official file moves the fixed text
features with `.cuda()`, which needs a GPU; this one moves them to the image's device.
"""
import torch
import torch.nn as nn

from dassl.engine import TRAINER_REGISTRY

from clip import clip
from official_style_coop import load_clip_to_cpu
from official_style_maple import OfficialStyleMaPLe, logits_or_loss


class FixedEmbeddings:
    def __init__(self, cfg, classnames, clip_model):
        prompt_prefix = "a photo of a"
        print("Vision Prompting Design")
        print(f"Number of context words (tokens) for Vision prompting: {cfg.TRAINER.VPT.N_CTX_VISION}")
        print(f'Using fixed hand crafted prompts: "{prompt_prefix}"')
        classnames = [name.replace("_", " ") for name in classnames]
        tokenized_prompts = torch.cat([clip.tokenize(prompt_prefix + " " + name + ".") for name in classnames])
        with torch.no_grad():
            self.fixed_embeddings = clip_model.encode_text(tokenized_prompts)

    def return_fixed_embeddings(self):
        return self.fixed_embeddings


class CustomCLIP(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        self.embeddings = FixedEmbeddings(cfg, classnames, clip_model)
        self.image_encoder = clip_model.visual
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype

    def forward(self, image, label=None, training=False):
        text_features = self.embeddings.return_fixed_embeddings().to(image.device)
        image_features = self.image_encoder(image.type(self.dtype))
        return logits_or_loss(image_features, text_features, self.logit_scale, label if training else None)


@TRAINER_REGISTRY.register()
class OfficialStyleVPT(OfficialStyleMaPLe):
    CONFIG_NODE = "VPT"
    REGISTERED_NAME = "prompt_learner"

    def design_details(self):
        vpt = self.cfg.TRAINER.VPT
        assert vpt.PROMPT_DEPTH_VISION >= 1, "For Vision Prompting, PROMPT_DEPTH_VISION should be >= 1"
        return {"trainer": "VPT", "vision_depth": vpt.PROMPT_DEPTH_VISION, "vision_ctx": vpt.N_CTX_VISION,
                "language_depth": 0, "language_ctx": 0}

    def load_backbone(self):
        return load_clip_to_cpu(self.cfg, self.design_details()).float()

    def build_custom_clip(self, classnames, clip_model):
        return CustomCLIP(self.cfg, classnames, clip_model)

    def loss(self, image, label):
        return self.model(image, label, training=True)
