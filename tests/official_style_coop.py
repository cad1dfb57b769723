"""A CoOp trainer written the way the official KaiyangZhou/CoOp `trainers/coop.py` is written: it uses only
the public Dassl API (`dassl.engine`, `dassl.optim`, `dassl.metrics`, `dassl.utils`) and the OpenAI-style
`clip` surface (`clip._MODELS`, `clip._download`, `clip.build_model`, `clip.tokenize`, the CLIP submodules
and the sequence-first transformer). It is loaded into train.py with `--import official_style_coop` by
tests/test_official_style_trainer.py, to prove such a file runs here unchanged.

Registered as `OfficialStyleCoOp` (the project's own `CoOp` keeps its name); configured by TRAINER.COOP.*.
It covers the paper's default CoOp setting: a generic, randomly initialised context before the class name.
"""
import os.path as osp

import torch
import torch.nn as nn
from torch.nn import functional as F

from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import load_checkpoint, load_pretrained_weights

from clip import clip
from clip.simple_tokenizer import SimpleTokenizer as _Tokenizer

_tokenizer = _Tokenizer()


def load_clip_to_cpu(cfg, design_details=None):
    backbone_name = cfg.MODEL.BACKBONE.NAME
    url = clip._MODELS[backbone_name]
    model_path = clip._download(url)

    try:
        # OpenAI ships TorchScript archives
        model = torch.jit.load(model_path, map_location="cpu").eval()
        state_dict = None
    except RuntimeError:
        # a plain saved state dict
        state_dict = torch.load(model_path, map_location="cpu", weights_only=True)

    model = clip.build_model(state_dict or model.state_dict(), design_details)
    return model


class TextEncoder(nn.Module):
    def __init__(self, clip_model):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts, tokenized_prompts):
        x = prompts + self.positional_embedding.type(self.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND: CLIP's transformer is sequence-first
        x = self.transformer(x)
        x = x.permute(1, 0, 2)  # LND -> NLD
        x = self.ln_final(x).type(self.dtype)

        # features of the EOT token (the largest id, so argmax finds it) projected to the joint space
        eot = tokenized_prompts.argmax(dim=-1)
        x = x[torch.arange(x.shape[0]), eot] @ self.text_projection
        return x


class PromptLearner(nn.Module):
    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        n_cls = len(classnames)
        n_ctx = cfg.TRAINER.COOP.N_CTX
        dtype = clip_model.dtype
        ctx_dim = clip_model.ln_final.weight.shape[0]
        clip_imsize = clip_model.visual.input_resolution
        cfg_imsize = cfg.INPUT.SIZE[0]
        assert cfg_imsize == clip_imsize, f"cfg_imsize ({cfg_imsize}) must equal to clip_imsize ({clip_imsize})"

        print("Initializing a generic context")
        ctx_vectors = torch.empty(n_ctx, ctx_dim, dtype=dtype)
        nn.init.normal_(ctx_vectors, std=0.02)
        prompt_prefix = " ".join(["X"] * n_ctx)

        print(f'Initial context: "{prompt_prefix}"')
        print(f"Number of context words (tokens): {n_ctx}")

        self.ctx = nn.Parameter(ctx_vectors)  # the only learned tensor

        classnames = [name.replace("_", " ") for name in classnames]
        name_lens = [len(_tokenizer.encode(name)) for name in classnames]
        prompts = [prompt_prefix + " " + name + "." for name in classnames]

        tokenized_prompts = torch.cat([clip.tokenize(p) for p in prompts])
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokenized_prompts).type(dtype)

        # Fixed token embeddings around the context: SOS before it; class name, ".", EOT and padding after it.
        # They depend on the class names, so load_model drops them and keeps the ones of the current classes.
        self.register_buffer("token_prefix", embedding[:, :1, :])
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:, :])

        self.n_cls = n_cls
        self.n_ctx = n_ctx
        self.tokenized_prompts = tokenized_prompts
        self.name_lens = name_lens

    def forward(self):
        # the generic context is shared by every class
        ctx = self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)

        prefix = self.token_prefix
        suffix = self.token_suffix

        # class token position "end": [SOS][ctx][class name . EOT padding]
        prompts = torch.cat([prefix, ctx, suffix], dim=1)
        return prompts


class CustomCLIP(nn.Module):
    # the MaPLe-family files in tests/ subclass it with their own prompt learner and text encoder
    prompt_learner_class = PromptLearner
    text_encoder_class = TextEncoder

    def __init__(self, cfg, classnames, clip_model):
        super().__init__()
        self.prompt_learner = self.prompt_learner_class(cfg, classnames, clip_model)
        self.tokenized_prompts = self.prompt_learner.tokenized_prompts
        self.image_encoder = clip_model.visual
        self.text_encoder = self.text_encoder_class(clip_model)
        self.logit_scale = clip_model.logit_scale
        self.dtype = clip_model.dtype

    def forward(self, image):
        image_features = self.image_encoder(image.type(self.dtype))

        prompts = self.prompt_learner()
        tokenized_prompts = self.tokenized_prompts
        text_features = self.text_encoder(prompts, tokenized_prompts)

        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)

        logit_scale = self.logit_scale.exp()
        logits = logit_scale * image_features @ text_features.t()
        return logits


@TRAINER_REGISTRY.register()
class OfficialStyleCoOp(TrainerX):
    """Context Optimization (CoOp), Zhou et al., IJCV 2022, in the official file's shape."""

    # the CoOp followers in tests/ (KgCoOp, ProGrad, TCP) read their own node and build their own CustomCLIP;
    # KgCoOp and ProGrad refuse amp (their official amp branches fail)
    CONFIG_NODE = "COOP"
    custom_clip_class = CustomCLIP
    PRECISIONS = ["fp16", "fp32", "amp"]

    def check_cfg(self, cfg):
        node = cfg.TRAINER[self.CONFIG_NODE]
        assert node.PREC in self.PRECISIONS, f"{type(self).__name__}: PREC must be one of {self.PRECISIONS}"
        assert not node.CSC and node.CLASS_TOKEN_POSITION == "end", (
            f"{type(self).__name__} learns a generic context with the class name at the end: set "
            f"TRAINER.{self.CONFIG_NODE}.CSC False and TRAINER.{self.CONFIG_NODE}.CLASS_TOKEN_POSITION 'end'"
        )
        self.check_context_init(node)

    def check_context_init(self, node):
        assert not node.CTX_INIT, "OfficialStyleCoOp learns a random context: set TRAINER.COOP.CTX_INIT ''"

    def build_custom_clip(self, classnames, clip_model):
        return self.custom_clip_class(self.cfg, classnames, clip_model)

    def build_model(self):
        cfg = self.cfg
        classnames = self.dm.dataset.classnames

        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME})")
        clip_model = load_clip_to_cpu(cfg)

        prec = cfg.TRAINER[self.CONFIG_NODE].PREC
        if prec == "fp32" or prec == "amp":
            # CLIP's default precision is fp16
            clip_model.float()

        print("Building custom CLIP")
        self.model = self.build_custom_clip(classnames, clip_model)

        print("Turning off gradients in both the image and the text encoder")
        for name, param in self.model.named_parameters():
            if "prompt_learner" not in name:
                param.requires_grad_(False)

        if cfg.MODEL.INIT_WEIGHTS:
            load_pretrained_weights(self.model.prompt_learner, cfg.MODEL.INIT_WEIGHTS)

        self.model.to(self.device)
        # only the prompt learner is given to the optimizer
        self.optim = build_optimizer(self.model.prompt_learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("prompt_learner", self.model.prompt_learner, self.optim, self.sched)

        self.scaler = torch.amp.GradScaler(self.device.type) if prec == "amp" else None

        device_count = torch.cuda.device_count()
        if device_count > 1:
            print(f"Multiple GPUs detected (n_gpus={device_count}), use all of them!")
            self.model = nn.DataParallel(self.model)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)

        prec = self.cfg.TRAINER.COOP.PREC
        if prec == "amp":
            with torch.autocast(self.device.type):
                output = self.model(image)
                loss = F.cross_entropy(output, label)
            self.optim.zero_grad()
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            output = self.model(image)
            loss = F.cross_entropy(output, label)
            self.model_backward_and_update(loss)

        loss_summary = {
            "loss": loss.item(),
            "acc": compute_accuracy(output, label)[0].item(),
        }

        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()

        return loss_summary

    def parse_batch_train(self, batch):
        input = batch["img"]
        label = batch["label"]
        input = input.to(self.device)
        label = label.to(self.device)
        return input, label

    def load_model(self, directory, epoch=None):
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return

        names = self.get_model_names()

        # by default the best model is loaded
        model_file = "model-best.pth.tar"
        if epoch is not None:
            model_file = "model.pth.tar-" + str(epoch)

        for name in names:
            model_path = osp.join(directory, name, model_file)

            if not osp.exists(model_path):
                raise FileNotFoundError(f'Model not found at "{model_path}"')

            checkpoint = load_checkpoint(model_path)
            state_dict = checkpoint["state_dict"]
            epoch = checkpoint["epoch"]

            # The fixed token buffers belong to the classes of the training run; keep the current ones
            # (this is what lets base-class context be evaluated on novel classes). Trainers that register
            # the whole model hold them under "prompt_learner.".
            for key in ("token_prefix", "token_suffix", "prompt_learner.token_prefix", "prompt_learner.token_suffix"):
                if key in state_dict:
                    del state_dict[key]

            print(f'Loading weights to {name} from "{model_path}" (epoch = {epoch})')
            self._models[name].load_state_dict(state_dict, strict=False)
