"""A ProGrad trainer written the way the official BeierZhu/Prompt-align `ProGrad.public/trainers/prograd.py` is
written: CoOp's context (initialised, with CTX_INIT True, from the dataset's template: its words fill the last
context vectors, zeros the others), a separate zero-shot CLIP in fp32 whose text features are made once from the
template, the loss pair (cross-entropy, T^2-scaled soft cross-entropy towards the zero-shot logits), and the update
`prograd_backward_and_update(xe_loss, kl_loss, LAMBDA)` of the fork's Dassl (dassl/engine/trainer.py here). Only
the prompt learner is trained and registered (as `prompt_learner`). Loaded by tests/test_prograd.py.

Registered as `OfficialStyleProGrad`; configured by TRAINER.PROGRAD.* (the official file reads TRAINER.COOP.* and
LOSS.T / LOSS.LAMBDA). Left out: its `amp` branch, which fails (it hands the loss pair to the GradScaler), and the
class-specific and middle / front variants of the context, which the official scripts do not use. A dataset
without an entry in the template table gets "a photo of a {}." (the official file raises KeyError).
"""
import torch
import torch.nn as nn
from torch.nn import functional as F

from dassl.engine import TRAINER_REGISTRY
from dassl.metrics import compute_accuracy

from clip import clip
import official_style_coop
from official_style_coop import OfficialStyleCoOp, load_clip_to_cpu
from official_style_maple import ContextPromptLearner

CUSTOM_TEMPLATES = {
    "OxfordPets": "a type of pet, a photo of a {}.",
    "OxfordFlowers": "a type of flower, a photo of a {}.",
    "FGVCAircraft": "a type of aircraft, a photo of a {}.",
    "DescribableTextures": "a texture of {}.",
    "EuroSAT": "a centered satellite photo of {}.",
    "Food101": "a type of food, a photo of {}.",
    "UCF101": "a photo of a person doing {}.",
}
# the other benchmarks and the ImageNet variants take CLIP's plain template
CUSTOM_TEMPLATES.update({name: "a photo of a {}." for name in (
    "StanfordCars", "SUN397", "Caltech101", "ImageNet", "ImageNetSketch", "ImageNetV2", "ImageNetA", "ImageNetR")})


def dataset_template(cfg):
    return CUSTOM_TEMPLATES.get(cfg.DATASET.NAME, "a photo of a {}.")


class PromptLearner(ContextPromptLearner):
    """CoOp's context; with CTX_INIT True its own construction from the template, then the MaPLe-style file's
    fixed class tokens and forward (SOS, context, class tokens)."""

    def __init__(self, cfg, classnames, clip_model):
        node = cfg.TRAINER.PROGRAD
        n_ctx = node.N_CTX
        if not node.CTX_INIT:
            print("Initializing a generic context")
            super().__init__(classnames, clip_model, n_ctx, "", cfg.INPUT.SIZE[0])
            return
        nn.Module.__init__(self)
        assert cfg.INPUT.SIZE[0] == clip_model.visual.input_resolution, "cfg_imsize must equal the backbone's"
        ctx_init = dataset_template(cfg).replace(" {}.", "").replace("_", " ")
        prompt_n_ctx = len(ctx_init.split(" "))
        assert n_ctx >= prompt_n_ctx, f"#tokens ({n_ctx}) should be >= the initial prompt's words ({prompt_n_ctx})"
        with torch.no_grad():
            embedding = clip_model.token_embedding(clip.tokenize(ctx_init)).type(clip_model.dtype)
        # the phrase's words fill the last context vectors; the first ones start at zero
        ctx_vectors = torch.zeros(n_ctx, clip_model.ln_final.weight.shape[0], dtype=clip_model.dtype)
        ctx_vectors[n_ctx - prompt_n_ctx:, :] = embedding[0, 1:1 + prompt_n_ctx, :]
        prompt_prefix = " ".join(["X"] * (n_ctx - prompt_n_ctx)) + " " + ctx_init
        print(f'Initial context: "{prompt_prefix}"')
        print(f"Number of context words (tokens): {n_ctx}")
        self.ctx = nn.Parameter(ctx_vectors)
        self.register_class_tokens(classnames, clip_model, prompt_prefix, n_ctx)

    def forward(self):
        return self.text_prompts()


class CLIP(nn.Module):
    """The zero-shot teacher: a CLIP of its own in fp32 with the template's class features, made once."""

    def __init__(self, cfg, classnames):
        super().__init__()
        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
        clip_model = load_clip_to_cpu(cfg)
        clip_model.float()
        template = dataset_template(cfg)
        prompts = [template.format(c.replace("_", " ")) for c in classnames]
        print(f"Prompts: {prompts}")
        with torch.no_grad():
            text_features = clip_model.encode_text(torch.cat([clip.tokenize(p) for p in prompts]))
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        self.text_features = text_features
        self.clip_model = clip_model

    def forward(self, image):
        image_features = self.clip_model.encode_image(image)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = self.text_features.to(image_features.device)
        return self.clip_model.logit_scale.exp() * image_features @ text_features.t()


class CustomCLIP(official_style_coop.CustomCLIP):
    prompt_learner_class = PromptLearner


def prograd_loss(stu_logits, tea_logits, label, T):
    """(cross-entropy, the distillation term -sum_c p_tea log p_stu at temperature T, times T^2, batch mean)."""
    xe_loss = F.cross_entropy(stu_logits, label)
    tea_prob = F.softmax(tea_logits / T, dim=-1)
    kl_loss = (-tea_prob * F.log_softmax(stu_logits / T, -1) * T * T).sum(1).mean()
    return xe_loss, kl_loss


@TRAINER_REGISTRY.register()
class OfficialStyleProGrad(OfficialStyleCoOp):
    """Prompt-aligned Gradient (Zhu et al., ICCV 2023) in the official file's shape; parse_batch_train and
    load_model come from the CoOp-style file."""

    CONFIG_NODE = "PROGRAD"
    custom_clip_class = CustomCLIP
    PRECISIONS = ["fp16", "fp32"]

    def check_context_init(self, node):
        pass  # random, or the dataset's template

    def build_model(self):
        # the teacher first, as officially; loading it draws nothing from the seeded generator
        print("Building zeroshot CLIP")
        self.zs_clip = CLIP(self.cfg, self.dm.dataset.classnames)
        for param in self.zs_clip.parameters():
            param.requires_grad_(False)
        super().build_model()
        self.zs_clip = self.zs_clip.to(self.device)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        node = self.cfg.TRAINER.PROGRAD
        output = self.model(image)
        with torch.no_grad():
            zs_clip_output = self.zs_clip(image)
        xe_loss, kl_loss = prograd_loss(output, zs_clip_output.detach(), label, node.T)
        self.prograd_backward_and_update(xe_loss, kl_loss, node.LAMBDA)

        loss_summary = {"xe_loss": xe_loss.item(), "kl_loss": kl_loss.item(),
                        "acc": compute_accuracy(output, label)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return loss_summary
