"""An IVLP trainer written the way the official MaPLe repository's `trainers/independentVL.py` is written:
`clip.build_model(state_dict, {"trainer": "IVLP", ...})` gives CLIP its own vision prompts and deep prompts
(parameters named VPT / VPT_shallow inside its modules), the text encoder is CoOp's plain one (so the
CoOp-style file's CustomCLIP serves), and the image encoder is `clip_model.visual` called on the image alone.
The PromptSRC repository builds its model with the same dictionary. tests/test_official_style_maple_family.py
checks that it gives the logits of trainers/independentVL.py.

Registered as `OfficialStyleIVLP`; configured by TRAINER.IVLP.*.
"""
from dassl.engine import TRAINER_REGISTRY

import official_style_coop
from official_style_maple import ContextPromptLearner, OfficialStyleMaPLe, logits_or_loss


class VLPromptLearner(ContextPromptLearner):
    def __init__(self, cfg, classnames, clip_model):
        ivlp = cfg.TRAINER.IVLP
        assert ivlp.PROMPT_DEPTH_TEXT >= 1, "In Independent VL prompting, Language prompt depth should be >=1"
        print("Independent V-L design")
        super().__init__(classnames, clip_model, ivlp.N_CTX_TEXT, ivlp.CTX_INIT, cfg.INPUT.SIZE[0])

    def forward(self):
        return self.text_prompts()


class CustomCLIP(official_style_coop.CustomCLIP):
    prompt_learner_class = VLPromptLearner

    def forward(self, image, label=None):
        text_features = self.text_encoder(self.prompt_learner(), self.tokenized_prompts)
        image_features = self.image_encoder(image.type(self.dtype))
        return logits_or_loss(image_features, text_features, self.logit_scale,
                              label if self.prompt_learner.training else None)


@TRAINER_REGISTRY.register()
class OfficialStyleIVLP(OfficialStyleMaPLe):
    CONFIG_NODE = "IVLP"
    REGISTERED_NAME = "VLPromptLearner"

    def design_details(self):
        ivlp = self.cfg.TRAINER.IVLP
        return {"trainer": "IVLP", "vision_depth": ivlp.PROMPT_DEPTH_VISION, "language_depth": ivlp.PROMPT_DEPTH_TEXT,
                "vision_ctx": ivlp.N_CTX_VISION, "language_ctx": ivlp.N_CTX_TEXT}

    def build_custom_clip(self, classnames, clip_model):
        return CustomCLIP(self.cfg, classnames, clip_model)
