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
from official_style_coop import OfficialStyleCoOp, _tokenizer, load_clip_to_cpu

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


class PromptLearner(official_style_coop.PromptLearner):
    """Its own construction; the forward (SOS, context, class tokens) is the CoOp-style file's."""

    def __init__(self, cfg, classnames, clip_model):
        nn.Module.__init__(self)
        node = cfg.TRAINER.PROGRAD
        n_ctx = node.N_CTX
        dtype = clip_model.dtype
        ctx_dim = clip_model.ln_final.weight.shape[0]
        assert cfg.INPUT.SIZE[0] == clip_model.visual.input_resolution, "cfg_imsize must equal the backbone's"

        if node.CTX_INIT:
            ctx_init = dataset_template(cfg).replace(" {}.", "").replace("_", " ")
            prompt_n_ctx = len(ctx_init.split(" "))
            assert n_ctx >= prompt_n_ctx, f"#tokens ({n_ctx}) should be >= the initial prompt's words ({prompt_n_ctx})"
            with torch.no_grad():
                embedding = clip_model.token_embedding(clip.tokenize(ctx_init)).type(dtype)
            # the phrase's words fill the last context vectors; the first ones start at zero
            ctx_vectors = torch.zeros(n_ctx, ctx_dim, dtype=dtype)
            ctx_vectors[n_ctx - prompt_n_ctx:, :] = embedding[0, 1:1 + prompt_n_ctx, :]
            prompt_prefix = " ".join(["X"] * (n_ctx - prompt_n_ctx)) + " " + ctx_init
        else:
            print("Initializing a generic context")
            ctx_vectors = torch.empty(n_ctx, ctx_dim, dtype=dtype)
            nn.init.normal_(ctx_vectors, std=0.02)
            prompt_prefix = " ".join(["X"] * n_ctx)
        print(f'Initial context: "{prompt_prefix}"')
        print(f"Number of context words (tokens): {n_ctx}")
        self.ctx = nn.Parameter(ctx_vectors)

        classnames = [name.replace("_", " ") for name in classnames]
        tokenized_prompts = torch.cat([clip.tokenize(prompt_prefix + " " + name + ".") for name in classnames])
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokenized_prompts).type(dtype)
        # the fixed tokens around the context, dropped by load_model (they follow the current class names)
        self.register_buffer("token_prefix", embedding[:, :1, :])
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :])
        self.n_cls, self.n_ctx = len(classnames), n_ctx
        self.tokenized_prompts = tokenized_prompts
        self.name_lens = [len(_tokenizer.encode(name)) for name in classnames]


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

    def check_cfg(self, cfg):
        node = cfg.TRAINER.PROGRAD
        assert node.PREC in ["fp16", "fp32"], "OfficialStyleProGrad: PREC fp16 or fp32 (the official amp branch fails)"
        assert not node.CSC and node.CLASS_TOKEN_POSITION == "end", "OfficialStyleProGrad: a generic context, class at the end"

    def build_custom_clip(self, classnames, clip_model):
        return CustomCLIP(self.cfg, classnames, clip_model)

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
