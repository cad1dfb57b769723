"""Learned prompts as words: the nearest vocabulary tokens of every learned text context vector.

    python -m scripts.interpret_prompts RUN_DIR_OR_CHECKPOINT [--topk K] [--epoch N] [--json OUT]
        [--config-file YAML] [--import MODULE] [KEY VALUE ...]

As CoOp's interpret_prompt.py does it: the Euclidean distance of each context vector to every row of the
backbone's token embedding table, the `topk` closest rows decoded with CLIP's BPE tokenizer. Read here:
- the shallow text context (`ctx`, the tokens right after SOS), one per class for class-specific contexts (CSC);
- the deep text prompts, layer by layer (MaPLe's `compound_prompts_text.*`, IVLP/PromptSRC's
  `text_deep_prompts.*` and the official `text_encoder.transformer.resblocks.<i>.VPT_shallow`). A deep prompt
  replaces the activations at the input of its layer, where the residual stream has left the token
  embedding space, so its nearest tokens are a rougher reading than the shallow context's (MaPLe reads them so);
- vision prompts and MaPLe's text-to-vision couplings are named with their shapes but not decoded: they live
  in the vision transformer, not in the token embedding space. Every other learned tensor is listed too.

The input is a run folder of train.py (its last checkpoint, or `--epoch`) or a checkpoint file, ours or in the
official layout (`<run>/prompt_learner/model.pth.tar-50` of CoOp, `MultiModalPromptLearner/...` of MaPLe, ...).
The token embedding is the backbone's of the run's config.yaml (MODEL.BACKBONE); for a checkpoint without
one, give the trainer YAML (`--config-file`) or the backbone as `MODEL.BACKBONE.NAME ViT-B/16`.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import torch

import api
from clip.simple_tokenizer import SimpleTokenizer
from dassl.engine.run_folder import CONFIG_FILE_NAME
from dassl.utils import load_checkpoint
from dassl.utils.errors import InputError, run_command
from trainers.common import load_backbone_state_dict, rename_official_vpt_key

DISTANCE_ROWS = 1024  # context vectors per distance computation: 1024 x 49408 fp32 distances are 200 MB

# Learned text context in our names (official IVLP/VPT keys are renamed first): (pattern, layer of the match).
TEXT_CONTEXT = (
    (re.compile(r"ctx"), lambda match: 0),
    (re.compile(r"(?:compound_prompts_text|text_deep_prompts)\.(\d+)"), lambda match: int(match.group(1)) + 1),
)
# Learned tensors of the vision side: shown, never decoded.
VISION = re.compile(r"vision_ctx|vision_deep_prompts\.\d+|proj\.\w+|compound_prompt_projections\.\d+\.\w+")
# Tensors a checkpoint holds that nobody learned: the class-name token buffers (rebuilt from the class names
# when a model loads) and the frozen zero-shot encoder the official PromptSRC keeps inside its prompt learner.
NOT_LEARNED = re.compile(r"token_prefix|token_suffix|ZS_image_encoder\..*")


@dataclass
class Neighbours:
    """The `topk` nearest vocabulary tokens of one context vector, nearest first."""

    position: int  # index of the vector in its context (0 = right after SOS)
    token_ids: list[int]
    tokens: list[str]  # BPE tokens as the vocabulary spells them ("</w>" ends a word)
    distances: list[float]


@dataclass
class ContextReading:
    """One learned text context: `key` in the checkpoint, the text layer whose input it is, its class for a
    class-specific context, its vectors' neighbours, and the top-1 tokens decoded as one string."""

    key: str
    layer: int
    vectors: list[Neighbours]
    words: str
    class_index: Optional[int] = None
    class_name: Optional[str] = None


@dataclass
class PromptReading:
    checkpoint: str
    epoch: Optional[int]
    backbone: str
    vocabulary: int
    width: int
    text: list[ContextReading] = field(default_factory=list)
    vision: dict[str, list[int]] = field(default_factory=dict)  # key -> shape
    other: dict[str, list[int]] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------
# Reading


def learned_tensors(state_dict: dict) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under our prompt-learner names: "module." dropped, official IVLP/VPT keys
    renamed into the prompt learner, then only the prompt learner's own (a checkpoint of a whole model, as
    the official MaPLe saves it, also holds the frozen CLIP), without the prefix; no class-name buffers."""
    renamed = {}
    for key, value in state_dict.items():
        if torch.is_tensor(value):
            renamed[rename_official_vpt_key(key[len("module."):] if key.startswith("module.") else key)] = value
    prefix = "prompt_learner."
    if any(key.startswith(prefix) for key in renamed):  # a whole model; else the prompt learner itself (CoOp)
        renamed = {key[len(prefix):]: value for key, value in renamed.items() if key.startswith(prefix)}
    return {key: value for key, value in renamed.items() if not NOT_LEARNED.fullmatch(key)}


def text_layer(key: str) -> Optional[int]:
    for pattern, layer in TEXT_CONTEXT:
        match = pattern.fullmatch(key)
        if match:
            return layer(match)
    return None


def nearest_tokens(vectors: torch.Tensor, embedding: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, token ids), each [n, topk], of the `topk` embedding rows nearest to each of `vectors` [n, D]."""
    distances, ids = [], []
    for part in vectors.float().split(DISTANCE_ROWS):
        indices = torch.cdist(part, embedding).topk(topk, dim=1, largest=False).indices
        # cdist's matrix-product form loses ~1e-4 to cancellation; the chosen few are recomputed directly
        distances.append((part.unsqueeze(1) - embedding[indices]).norm(dim=-1))
        ids.append(indices)
    return torch.cat(distances), torch.cat(ids)


def read_context(key: str, layer: int, vectors: torch.Tensor, embedding: torch.Tensor, topk: int,
                 tokenizer: SimpleTokenizer, class_index: Optional[int] = None,
                 class_name: Optional[str] = None) -> ContextReading:
    distances, ids = nearest_tokens(vectors, embedding, topk)
    neighbours = [Neighbours(position, row_ids.tolist(), [tokenizer.decoder[i] for i in row_ids.tolist()],
                             [round(d, 6) for d in row_distances.tolist()])
                  for position, (row_distances, row_ids) in enumerate(zip(distances, ids))]
    words = tokenizer.decode(ids[:, 0].tolist()).strip()
    return ContextReading(key, layer, neighbours, words, class_index, class_name)


def read_prompts(state_dict: dict, embedding: torch.Tensor, topk: int, classnames: Optional[Sequence[str]] = None,
                 checkpoint: str = "", epoch: Optional[int] = None, backbone: str = "") -> PromptReading:
    """Every learned text context of `state_dict` read against the token `embedding` [vocabulary, width];
    class-specific contexts [n_cls, n_ctx, width] per class, named by `classnames` when they match."""
    embedding = embedding.detach().float()
    vocabulary, width = embedding.shape
    if not 1 <= topk <= vocabulary:
        raise InputError(f"--topk must be between 1 and the vocabulary size {vocabulary}; got {topk}")
    tokenizer = SimpleTokenizer()
    reading = PromptReading(checkpoint, epoch, backbone, vocabulary, width)
    tensors = learned_tensors(state_dict)
    text = sorted(((text_layer(key), key) for key in tensors if text_layer(key) is not None))
    for layer, key in text:
        value = tensors[key].detach().float().cpu()
        if value.shape[-1] != width:
            raise InputError(f"{key} has width {value.shape[-1]}, but the token embedding of the backbone {backbone!r} "
                             f"has width {width}: give the backbone the prompts were trained on (MODEL.BACKBONE.NAME)")
        if value.dim() == 2:
            reading.text.append(read_context(key, layer, value, embedding, topk, tokenizer))
        elif value.dim() == 3:  # class-specific: one context per class
            names = list(classnames) if classnames is not None and len(classnames) == value.shape[0] else None
            for index, vectors in enumerate(value):
                reading.text.append(read_context(key, layer, vectors, embedding, topk, tokenizer, index,
                                                 names[index] if names else None))
        else:
            raise InputError(f"{key} has shape {tuple(value.shape)}; a text context is [n_ctx, width] or "
                             "[n_cls, n_ctx, width]")
    for key, value in tensors.items():
        if text_layer(key) is None:
            (reading.vision if VISION.fullmatch(key) else reading.other)[key] = list(value.shape)
    return reading


# --------------------------------------------------------------------------------------------------------
# Where the checkpoint and the backbone come from


def checkpoint_files(path: str, epoch: Optional[int]) -> list[tuple[str, Optional[int]]]:
    """(file, epoch) of the checkpoint file `path`, or of each model folder of the run folder `path` (its last
    checkpoint, or that of `epoch`)."""
    if osp.isfile(path):
        if epoch is not None:
            raise InputError(f"{path} is one checkpoint file, which is the one read; drop --epoch "
                             "(or give the run folder with --epoch)")
        return [(path, None)]
    if not osp.isdir(path):
        raise InputError(f"no run folder or checkpoint file at {path}")
    found = []
    for name in sorted(os.listdir(path)):
        folder = osp.join(path, name)
        if not osp.isdir(folder):
            continue
        try:
            chosen = epoch if epoch is not None else api.latest_epoch(folder)
        except FileNotFoundError:
            continue  # not a model folder (tensorboard/, ...)
        file = osp.join(folder, f"model.pth.tar-{chosen}" if chosen is not None else "model-best.pth.tar")
        if not osp.isfile(file):
            raise InputError(f"{folder} has no checkpoint of epoch {epoch}: {file} is missing")
        found.append((file, chosen))
    if not found:
        raise InputError(f"{path} holds no checkpoint: expected <model name>/model.pth.tar-<epoch> in a run folder "
                         "of train.py, or give the checkpoint file")
    return found


def run_config(path: str, config_file: str, opts: Sequence[str], imports: Sequence[str]):
    """The config whose MODEL.BACKBONE gives the token embedding: `config_file` when given, else the config.yaml
    of the run (the folder `path`, or the run folder a checkpoint file sits in), else the defaults and `opts`."""
    run_dir = path if osp.isdir(path) else osp.dirname(osp.dirname(osp.abspath(path)))
    saved = osp.join(run_dir, CONFIG_FILE_NAME)
    if not config_file and osp.isfile(saved):
        config_file = saved
    if not config_file and "MODEL.BACKBONE.NAME" not in opts[::2] and "MODEL.BACKBONE.PATH" not in opts[::2]:
        raise InputError(f"no {CONFIG_FILE_NAME} in {run_dir} to say which backbone the prompts belong to: give the "
                         "run's trainer YAML (--config-file) or the backbone (MODEL.BACKBONE.NAME ViT-B/16, or "
                         "MODEL.BACKBONE.PATH /path/to/clip.pt)")
    return api.build_config(config_file, "", opts, imports), config_file


def class_names(cfg, has_config: bool) -> Optional[list[str]]:
    """The run's class names (its dataset after DATASET.SUBSAMPLE_CLASSES) when its data can be read, else None."""
    if not has_config:
        return None
    try:
        return api.dataset_classnames(cfg)
    except InputError as error:
        print(f"note: class-specific contexts are numbered, not named: {error}", file=sys.stderr)
        return None


# --------------------------------------------------------------------------------------------------------
# Output


def format_reading(reading: PromptReading) -> str:
    epoch = f" (epoch {reading.epoch})" if reading.epoch is not None else ""
    lines = [f"Checkpoint: {reading.checkpoint}{epoch}",
             f"Backbone: {reading.backbone} (token embedding {reading.vocabulary} x {reading.width}); Euclidean "
             "distance of each context vector to the token embeddings, nearest first"]
    if not reading.text:
        lines.append("No learned text context in this checkpoint.")
    if any(context.layer > 0 for context in reading.text):
        lines.append("Deep prompts (layer >= 1) replace the activations at the input of their layer, where the "
                     "residual stream has left the token embedding space: their nearest tokens are a rough reading.")
    for context in reading.text:
        where = "shallow context (after SOS)" if context.layer == 0 else f"deep prompt at the input of layer {context.layer}"
        owner = ""
        if context.class_index is not None:
            owner = f", class {context.class_index}" + (f" {context.class_name!r}" if context.class_name else "")
        lines.append(f"\nText layer {context.layer}: {context.key}, {where}{owner}")
        lines.append(f"  nearest words: {context.words!r}")
        for vector in context.vectors:
            pairs = ", ".join(f"{token!r} {distance:.4f}" for token, distance in zip(vector.tokens, vector.distances))
            lines.append(f"  {vector.position + 1}: {pairs}")
    if reading.vision:
        shapes = ", ".join(f"{key} {shape}" for key, shape in reading.vision.items())
        lines.append(f"\nVision side, not decoded (vision-transformer vectors, not words): {shapes}")
    if reading.other:
        shapes = ", ".join(f"{key} {shape}" for key, shape in reading.other.items())
        lines.append(f"\nOther learned tensors, not decoded: {shapes}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="a run folder of train.py or a checkpoint file (ours or the official layout)")
    parser.add_argument("--topk", type=int, default=5, help="nearest tokens per context vector (default 5)")
    parser.add_argument("--epoch", type=int, default=None, help="the run's checkpoint of this epoch (default: the last)")
    parser.add_argument("--config-file", default="", help="trainer YAML for a checkpoint without config.yaml")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="a trainer module the run was trained with (train.py --import)")
    parser.add_argument("--json", default="", help="also write the readings to this JSON file")
    parser.add_argument("opts", nargs="*", help="KEY VALUE config overrides, e.g. MODEL.BACKBONE.NAME")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> list[PromptReading]:
    args = build_parser().parse_intermixed_args(argv)  # options may follow the overrides
    if len(args.opts) % 2:
        raise InputError(f"config overrides come in KEY VALUE pairs; got {args.opts}")
    files = checkpoint_files(args.path, args.epoch)
    cfg, config_file = run_config(args.path, args.config_file, args.opts, args.imports)
    embedding = load_backbone_state_dict(cfg)["token_embedding.weight"]
    names = None
    readings = []
    for file, epoch in files:
        state_dict = load_checkpoint(file)
        state_dict = state_dict.get("state_dict", state_dict)
        if names is None and any(v.dim() == 3 for k, v in learned_tensors(state_dict).items() if text_layer(k) == 0):
            names = class_names(cfg, bool(config_file))
        reading = read_prompts(state_dict, embedding, args.topk, names, file, epoch, cfg.MODEL.BACKBONE.NAME)
        print(format_reading(reading) + "\n")
        readings.append(reading)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump([asdict(reading) for reading in readings], handle, indent=1)
    return readings


if __name__ == "__main__":
    run_command("interpret_prompts", main)
