"""CoOp (Zhou et al., IJCV 2022): learned context words in front of (or around) the class name."""
from typing import Sequence

import torch
import torch.nn as nn

from dassl.config import ConfigError
from dassl.engine import TRAINER_REGISTRY
from dassl.metrics import compute_accuracy

from .common import PromptedCLIP, PromptTrainer, SpeedOptions, TextPromptLearner, init_text_context
from .method import MethodSpec

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")


class PromptLearner(TextPromptLearner):
    """Unified (or class-specific, CSC) context; the class tokens go at the end, the middle or the front."""

    def __init__(self, cfg, classnames: Sequence[str], clip_model: nn.Module, method: str = "COOP"):
        node = cfg.TRAINER[method]
        if node.CLASS_TOKEN_POSITION not in CLASS_TOKEN_POSITIONS:
            raise ConfigError(f"TRAINER.{method}.CLASS_TOKEN_POSITION must be one of "
                             f"{', '.join(CLASS_TOKEN_POSITIONS)}; got {node.CLASS_TOKEN_POSITION!r}")
        ctx, prefix, n_ctx = self.initial_context(cfg, node, classnames, clip_model)
        print(f'Initial context: "{prefix}"')
        print(f"Number of context words (tokens): {n_ctx}")
        super().__init__(clip_model, classnames, ctx, prefix, n_ctx)
        self.class_token_position = node.CLASS_TOKEN_POSITION

    def initial_context(self, cfg, node, classnames: Sequence[str], clip_model: nn.Module):
        """(context parameter, prompt prefix string, number of context tokens) from the method's node:
        CTX_INIT's words (N_CTX re-derived from it), else random, class-specific with CSC."""
        class_specific = bool(node.CSC) and not node.CTX_INIT
        if not node.CTX_INIT:
            print("Initializing class-specific contexts" if class_specific else "Initializing a generic context")
        return init_text_context(clip_model, node.N_CTX, node.CTX_INIT, derive_n_ctx=True,
                                 n_cls_specific=len(classnames) if class_specific else 0)

    def assemble(self, prefix: torch.Tensor, ctx: torch.Tensor, suffix: torch.Tensor, index: slice) -> torch.Tensor:
        if self.class_token_position == "end":
            return super().assemble(prefix, ctx, suffix, index)
        half = self.n_ctx // 2
        rows = []
        # The class name is name_len tokens at the start of the suffix; EOT stays where the "X .. X name."
        # tokenisation put it, since only the order of the tokens before it changes.
        for i, name_len in enumerate(self.name_lens[index]):
            name, rest = suffix[i : i + 1, :name_len], suffix[i : i + 1, name_len:]
            if self.class_token_position == "middle":
                parts = [prefix[i : i + 1], ctx[i : i + 1, :half], name, ctx[i : i + 1, half:], rest]
            else:
                parts = [prefix[i : i + 1], name, ctx[i : i + 1], rest]
            rows.append(torch.cat(parts, dim=1))
        return torch.cat(rows)


@TRAINER_REGISTRY.register()
class CoOp(PromptTrainer):
    METHOD_KEY = "COOP"
    MODEL_NAME = "prompt_learner"
    REGISTER_PROMPT_LEARNER = True
    SPEC = MethodSpec(default_config="vit_b16", protocol_configs={"xd": "vit_b16_ep50"})

    def build_custom_clip(self, clip_model: nn.Module, classnames: Sequence[str]) -> PromptedCLIP:
        learner = PromptLearner(self.cfg, classnames, clip_model)
        return PromptedCLIP(clip_model, learner, SpeedOptions.from_cfg(self.cfg))

    def loss_summary(self, loss: torch.Tensor, logits: torch.Tensor, label: torch.Tensor) -> dict:
        return {"loss": loss.detach(), "acc": compute_accuracy(logits, label)[0]}
