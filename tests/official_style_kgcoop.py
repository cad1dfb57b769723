"""A KgCoOp trainer written the way the official htyao89/KgCoOp `trainers/kgcoop.py` is written: CoOp's context
after SOS, a second CLIP loaded with OpenAI's fp16 weights (whatever PREC) that encodes the dataset's hand-crafted
prompt once, its features normalised in fp16 when they are made and again in every forward, and the loss
cross-entropy + W * (1 - mean cosine) between the learned class features and those hand-crafted ones; only the
context is trained, and the prompt learner is registered (as `prompt_learner`). Loaded by tests/test_kgcoop.py.

Registered as `OfficialStyleKgCoOp`; configured by TRAINER.KGCOOP.* (the official file reads TRAINER.COOP.* and
its CTX_INIT is a bool whose True means the words "a photo of a"; here CTX_INIT is "" or those words). Left out,
since they change nothing computed: the official prompt learner's unused `bias_vectors` and `meta_net` and the
model's unused `adapter` (the first two hard-code 512-wide features), and its `amp` branch, which fails (it
passes the model's (logits, distance) pair to the cross-entropy). A dataset without an entry in the template table
gets "a photo of a {}." (the official file raises KeyError).
"""
import torch
from torch.nn import functional as F

from dassl.engine import TRAINER_REGISTRY
from dassl.metrics import compute_accuracy

from clip import clip
import official_style_coop
from official_style_clip_adapter import CUSTOM_TEMPLATES as CLIP_ADAPTER_TEMPLATES
from official_style_coop import OfficialStyleCoOp, load_clip_to_cpu
from official_style_maple import ContextPromptLearner

# KgCoOp's table: CLIP-Adapter's (CoOp's zero-shot one) but for DTD, plus the ImageNet variants
CUSTOM_TEMPLATES = {**CLIP_ADAPTER_TEMPLATES, "DescribableTextures": "a photo of a {}, a type of texture."}
CUSTOM_TEMPLATES.update({name: "a photo of a {}." for name in ("ImageNetSketch", "ImageNetV2", "ImageNetA", "ImageNetR")})
INIT_WORDS = "a photo of a"  # what the official CTX_INIT True stands for


class PromptLearner(ContextPromptLearner):
    def __init__(self, cfg, classnames, clip_model):
        node = cfg.TRAINER.KGCOOP
        if node.CTX_INIT:
            n_ctx = len(INIT_WORDS.split(" "))  # 4 words: the MaPLe-style learner takes them all
        else:
            print("Initializing a generic context")
            n_ctx = node.N_CTX
        super().__init__(classnames, clip_model, n_ctx, node.CTX_INIT, cfg.INPUT.SIZE[0])

        # the hand-crafted prompts' features, from a CLIP of its own in OpenAI's fp16, on the training device
        device = torch.device("cuda" if cfg.USE_CUDA and torch.cuda.is_available() else "cpu")
        clip_model_ = load_clip_to_cpu(cfg).to(device)
        template = CUSTOM_TEMPLATES.get(cfg.DATASET.NAME, "a photo of a {}.")
        prompts_ = [template.format(c.replace("_", " ")) for c in classnames]
        print(f"Prompts: {prompts_}")
        prompts_ = torch.cat([clip.tokenize(p) for p in prompts_]).to(device)
        with torch.no_grad():
            text_features = clip_model_.encode_text(prompts_)
            text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        self.text_features = text_features  # a plain attribute: never saved, never trained

    def forward(self):
        return self.text_prompts()


class CustomCLIP(official_style_coop.CustomCLIP):
    prompt_learner_class = PromptLearner

    def __init__(self, cfg, classnames, clip_model):
        super().__init__(cfg, classnames, clip_model)
        self.ori_embedding = self.prompt_learner.text_features

    def forward(self, image):
        prompts = self.prompt_learner()
        image_features = self.image_encoder(image.type(self.dtype))
        text_features = self.text_encoder(prompts, self.tokenized_prompts)

        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits = self.logit_scale.exp() * image_features @ text_features.t()

        # normalised again, in fp16: the official forward does so on the already normalised features
        text_features_old = self.ori_embedding / self.ori_embedding.norm(dim=-1, keepdim=True)
        score = torch.nn.CosineSimilarity(dim=1, eps=1e-07)(text_features, text_features_old)
        return logits, 1.0 - torch.mean(score)


@TRAINER_REGISTRY.register()
class OfficialStyleKgCoOp(OfficialStyleCoOp):
    """Knowledge-guided Context Optimization (Yao et al., CVPR 2023) in the official file's shape; parse_batch_train
    and load_model (which drops the class-name buffers) come from the CoOp-style file."""

    CONFIG_NODE = "KGCOOP"
    custom_clip_class = CustomCLIP
    PRECISIONS = ["fp16", "fp32"]

    def check_context_init(self, node):
        assert node.CTX_INIT in ("", INIT_WORDS), f"OfficialStyleKgCoOp: CTX_INIT is '' or {INIT_WORDS!r}"

    def build_model(self):
        super().build_model()
        self.w = self.cfg.TRAINER.KGCOOP.W

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        output, score = self.model(image)
        loss = F.cross_entropy(output, label) + self.w * score
        self.model_backward_and_update(loss)

        loss_summary = {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.sched.step()  # the official file steps the scheduler itself, not through update_lr
        return loss_summary

    def model_inference(self, input):
        return self.model(input)[0]
