"""A TCP trainer written the way the official htyao89/Textual-based_Class-aware_prompt_tuning `trainers/tcp.py` is
written: a second fp16 CLIP encodes the hand-written prompts once, a meta-net turns those features into four
class-aware tokens per class, the text encoder splices them over the context positions at the input of block 8
(the official fork's counter in its blocks), and a CustomCLIP returns (logits, loss) in training mode with
CE + 8.0 x (1 - mean cos) to the hand-written features. Only the prompt learner is optimised and registered
(as `prompt_learner`). tests/test_tcp.py trains it beside trainers/tcp.py on the same batches.

Registered as `OfficialStyleTCP`; configured by TRAINER.COOP.* (N_CTX, CTX_INIT, PREC, W) and TRAINER.COCOOP.PREC
(the meta-net's dtype) as the official file; its module-level `extend_cfg` adds TRAINER.COOP.W, a key of the
official train.py. What differs from the official file so that it runs on the tests' backbones and datasets:
the class-aware tokens are reshaped to the backbone's text width (the official writes 512); the text encoder
runs this project's CLIP blocks one by one (batch-first, with a causal flag, instead of the fork's blocks that
carry [x, class_feature, weight, counter]), with the fork's LAYERS / WEIGHTS as module constants a test may
lower for a shallower backbone; the meta-net takes the fp16 features in its own dtype (the official file feeds
them as they are, which fails with TRAINER.COCOOP.PREC fp32: its meta-net is fp16 in every working setting); a
dataset without a template gets "a photo of a {}." and "X X X X {}."; the
second CLIP goes to the device there is (the official calls .cuda()). The context and token buffers come from
the MaPLe-style file's ContextPromptLearner (the official initialisation), and the hand-written table is
trainers/tcp.py's KNOWLEDGE_TEMPLATES (the official CUSTOM_TEMPLATES_ori, data not written twice).
"""
import torch
import torch.nn as nn
from collections import OrderedDict
from torch.nn import functional as F

from dassl.engine import TRAINER_REGISTRY
from dassl.metrics import compute_accuracy

from clip import clip
import official_style_coop
from official_style_coop import OfficialStyleCoOp, load_clip_to_cpu
from official_style_maple import ContextPromptLearner
from trainers.tcp import KNOWLEDGE_TEMPLATES as CUSTOM_TEMPLATES_ori  # the official table, as data

# the fork's ResidualAttentionBlock: which blocks take the class-aware tokens at their input, and with what weight
LAYERS = [8]
WEIGHTS = [1.0]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

CUSTOM_TEMPLATES = {
    "OxfordPets": "X X X X {}, a type of pet.",
    "OxfordFlowers": "X X X X {}, a type of flower.",
    "FGVCAircraft": "X X X X {}, a type of aircraft.",
    "DescribableTextures": "X X X X {} texture.",
    "EuroSAT": "X X X X {}.",
    "StanfordCars": "X X X X {}, a type of car",
    "Food101": "X X X X {}, a type of food.",
    "SUN397": "X X X X {}.",
    "Caltech101": "X X X X {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
}


def extend_cfg(cfg):
    # the official train.py's key; the official file hands it to the text encoder, whose blocks ignore it
    cfg.TRAINER.COOP.W = 1.0


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class TextEncoder(official_style_coop.TextEncoder):
    def forward(self, prompts, class_feature, weight, tokenized_prompts):
        x = prompts + self.positional_embedding.type(self.dtype)
        # this project's blocks are batch-first: no NLD -> LND permute
        for counter, block in enumerate(self.transformer.resblocks):
            if counter in LAYERS:
                weight = WEIGHTS[LAYERS.index(counter)]
                n_ctx = class_feature.shape[1]
                prefix = x[:, :1, :]
                midfix = x[:, 1:1 + n_ctx, :]
                suffix = x[:, 1 + n_ctx:, :]
                x = torch.cat([prefix, weight * class_feature + (1 - weight) * midfix, suffix], dim=1)
            x = block(x, True)
        x = self.ln_final(x).type(self.dtype)
        x = x[torch.arange(x.shape[0]), tokenized_prompts.argmax(dim=-1)] @ self.text_projection
        return x


class PromptLearner(ContextPromptLearner):
    def __init__(self, cfg, classnames, clip_model):
        n_ctx = cfg.TRAINER.COOP.N_CTX
        # a true CTX_INIT means these four words; the prompts are the dataset's "X X X X ..." template
        ctx_init = "a photo of a" if cfg.TRAINER.COOP.CTX_INIT else ""
        if ctx_init:
            n_ctx = len(ctx_init.split(" "))
        temp = CUSTOM_TEMPLATES.get(cfg.DATASET.NAME, "X X X X {}.")
        prompts = [temp.format(c.replace("_", " ")) for c in classnames]
        super().__init__(classnames, clip_model, n_ctx, ctx_init, cfg.INPUT.SIZE[0], prompts=prompts)
        self.ctx_dim = clip_model.ln_final.weight.shape[0]

        # the hand-written prompts' features, from CLIP's own fp16 weights
        clip_model_ = load_clip_to_cpu(cfg)
        clip_model_.to(DEVICE)
        temp = CUSTOM_TEMPLATES_ori.get(cfg.DATASET.NAME, "a photo of a {}.")
        prompts_ = [temp.format(c.replace("_", " ")) for c in classnames]
        prompts_ = torch.cat([clip.tokenize(p) for p in prompts_]).to(DEVICE)
        with torch.no_grad():
            text_features = clip_model_.encode_text(prompts_)
            self.text_features = text_features / text_features.norm(dim=-1, keepdim=True)

        vis_dim = clip_model.visual.output_dim
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, vis_dim // 4, bias=True)),
            ("relu", QuickGELU()),
            ("linear2", nn.Linear(vis_dim // 4, 4 * self.ctx_dim, bias=True)),
        ]))
        if cfg.TRAINER.COCOOP.PREC == "fp16":
            self.meta_net.half()

    def forward(self):
        # the features in the meta-net's dtype (the official file passes them as they are, so its meta-net must be
        # fp16, TRAINER.COCOOP.PREC fp16, even under COOP.PREC fp32)
        class_feature = self.meta_net(self.text_features.type(self.meta_net.linear1.weight.dtype))
        class_feature = class_feature.reshape(class_feature.shape[0], -1, self.ctx_dim)
        return self.text_prompts(), class_feature


class CustomCLIP(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        self.prompt_learner = PromptLearner(cfg, classnames, clip_model)
        self.tokenized_prompts = self.prompt_learner.tokenized_prompts
        self.ori_embedding = self.prompt_learner.text_features
        self.image_encoder = clip_model.visual
        self.text_encoder = TextEncoder(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype
        self.weight = cfg.TRAINER.COOP.W

    def forward(self, image, label=None):
        image_features = self.image_encoder(image.type(self.dtype))
        text_features_old = self.ori_embedding
        cos = torch.nn.CosineSimilarity(dim=1, eps=1e-07)
        text_features_old = text_features_old / text_features_old.norm(dim=-1, keepdim=True)
        logit_scale = self.logit_scale.exp()

        prompts, class_prompt = self.prompt_learner()
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = self.text_encoder(prompts, class_prompt, self.weight, self.tokenized_prompts)
        text_features_norm = text_features / text_features.norm(dim=-1, keepdim=True)
        logits = logit_scale.detach() * image_features.detach() @ text_features_norm.t()

        if self.prompt_learner.training:
            score = cos(text_features_norm, text_features_old)
            score = 1.0 - torch.mean(score)
            loss = F.cross_entropy(logits, label) + 8.0 * score
            return logits, loss
        return logits


@TRAINER_REGISTRY.register()
class OfficialStyleTCP(OfficialStyleCoOp):
    """TCP in the official file's shape; build_model (with this file's CustomCLIP), load_model and
    parse_batch_train are the CoOp file's."""

    custom_clip_class = CustomCLIP

    def check_cfg(self, cfg):
        assert cfg.TRAINER.COOP.PREC in ["fp16", "fp32"], "the official amp branch fails: its model needs the label"
        assert not cfg.TRAINER.COOP.CSC, "the official TCP forward expands a generic context only"

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        output, loss = self.model(image, label)
        self.model_backward_and_update(loss)

        loss_summary = {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return loss_summary
