"""Pre-train the demo backbone: a tiny CLIP, contrastively, on captioned pictures of the demo world.

    python -m scripts.pretrain_demo_backbone            # writes clip/weights/DemoCLIP-ViT-Tiny.pt

The world (datasets/world.py) is a few thousand combinations of 36 named objects (the demo's 20 and the 16 of
its cross-dataset targets) with colours, sizes,
textures, positions and backgrounds, drawn as photos, line drawings or paintings; the captions name the
object and a random subset of its attributes after an opening that mostly names the style.
The model is an OpenAI-layout ViT CLIP (the real BPE tokenizer and vocabulary, context length 77): 4 layers
of width 128 in each tower, on 32x32 images in 8x8 patches (a 4x4 grid, ViT-B/32's 7x7 in miniature). With
a third of ViT-B/16's 12 layers, the demo configs use a third of the official prompt depths (9 -> 3, 12 -> 4).
Seeded throughout: the same command on the same machine writes the same file. The default run takes about
15 minutes on 2 CPU cores; `--steps` and `--pool-size` make the smoke-sized run of the tests.

Only the token-embedding rows of words the world uses are ever non-zero (they start at zero and AdamW leaves
rows without gradient untouched), so the 49408-row table of the fp16 file compresses to almost nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run as a file, not only as `python -m`
    sys.path.insert(0, REPO_ROOT)

from clip import clip as clip_api  # noqa: E402
from clip.bundled_models import BUNDLED_MODELS, DEMO_MODEL, bundled_path  # noqa: E402
from clip.model import CLIP, CLIPConfig  # noqa: E402
from clip.random_models import initialize, save_openai_format  # noqa: E402
from datasets import world  # noqa: E402

CONFIG = CLIPConfig(embed_dim=128, image_resolution=32, vision_layers=4, vision_width=128, vision_patch_size=8,
                    context_length=77, vocab_size=49408, transformer_width=128, transformer_heads=2,
                    transformer_layers=4)
TEMPLATE = "a photo of a {}."


@dataclass(frozen=True)
class Settings:
    steps: int = 5000
    batch_size: int = 64
    pool_size: int = 80000
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    seed: int = 0
    eval_images: int = 1000
    eval_every: int = 1000  # steps between zero-shot checks in the log (0: only at the end)


def render_pool(count: int, seed: int, size: int) -> tuple[torch.Tensor, list[world.Scene]]:
    """`count` scenes drawn in the world's own style: uint8 images [count, 3, size, size] and their scenes.
    Half are mirrored (with left and right swapped in the scene), since the demo's training flips images."""
    rng = np.random.default_rng([seed, 1])
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    scenes = []
    for i in range(count):
        scene = world.random_scene(rng)
        image = world.render(scene, size, rng)
        if rng.random() < 0.5:
            image = image[:, ::-1]
            scene = world.mirrored(scene)
        images[i] = image
        scenes.append(scene)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), scenes


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> CLIP-normalised float, as the demo's test-time transform does."""
    mean = torch.tensor(clip_api.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(clip_api.STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def world_token_ids() -> torch.Tensor:
    """Every token id a caption or a class prompt of the world can contain (BPE encodes word by word)."""
    words = [*world.CAPTION_WORDS, *world.WORLD_OBJECTS, *world.COLOURS, *world.BACKGROUNDS, *world.SIZES,
             *world.TEXTURES, *world.POSITIONS, "."]
    tokens = clip_api.tokenize(" ".join(words), context_length=512)
    return torch.unique(tokens[tokens > 0])


def build_model(seed: int) -> CLIP:
    """OpenAI's initialisation, then every token-embedding row the world never uses set to zero."""
    model = CLIP(**asdict(CONFIG))
    initialize(model, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        keep = torch.zeros(CONFIG.vocab_size, dtype=torch.bool)
        keep[world_token_ids()] = True
        model.token_embedding.weight[~keep] = 0
    return model


def _optimizer(model: CLIP, settings: Settings) -> torch.optim.Optimizer:
    # Decay the weight matrices only; embeddings, gains, biases and the temperature are left alone, which
    # also keeps the unused token rows exactly zero.
    no_decay = {"token_embedding.weight", "positional_embedding", "visual.positional_embedding",
                "visual.class_embedding", "logit_scale"}
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and n not in no_decay]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and n not in no_decay)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                              {"params": rest, "weight_decay": 0.0}],
                             lr=settings.lr, betas=(0.9, 0.98), eps=1e-6)


def _lr_at(step: int, settings: Settings) -> float:
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return settings.lr * 0.5 * (1 + math.cos(math.pi * progress))


def contrastive_loss(model: CLIP, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy, with captions that are the same text all counted as matches of each
    other's pictures (duplicates are common in a batch of this world; their features are identical, so the
    loss equals CLIP's one-hot one, but the targets say what is meant)."""
    image_features = F.normalize(model.encode_image(images), dim=-1)
    text_features = F.normalize(model.encode_text(tokens), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * image_features @ text_features.t()
    same = (tokens[:, None, :] == tokens[None, :, :]).all(-1).float()
    targets = same / same.sum(1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


@torch.no_grad()
def zero_shot_accuracy(model: CLIP, images: torch.Tensor, labels: torch.Tensor, objects: list[str]) -> float:
    """Top-1 accuracy of "a photo of a {object}." over `objects` (labels index into it)."""
    text = F.normalize(model.encode_text(clip_api.tokenize([TEMPLATE.format(o) for o in objects])), dim=-1)
    image = F.normalize(model.encode_image(normalise(images)), dim=-1)
    return (image @ text.t()).argmax(1).eq(labels).float().mean().item()


def evaluation_sets(settings: Settings, size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """Held-out pictures: of every world object in the world's own styles, and of the demo's 20 objects in the
    demo's shifted style; each with its labels and the object names they index."""
    rng = np.random.default_rng([settings.seed, 2])
    everything, demo_objects = list(world.WORLD_OBJECTS), list(world.OBJECTS)
    clean, clean_labels, shifted, shifted_labels = [], [], [], []
    for i in range(settings.eval_images):
        scene = world.random_scene(rng, everything[i % len(everything)])
        clean.append(world.render(scene, size, rng))
        clean_labels.append(i % len(everything))
        photo = world.random_scene(rng, demo_objects[i % len(demo_objects)], style="photo")
        shifted.append(world.to_uint8(world.shift_style(world.render_float(photo, size, rng), rng)))
        shifted_labels.append(i % len(demo_objects))
    as_tensor = lambda batch: torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return {"world": (as_tensor(clean), torch.tensor(clean_labels), everything),
            "demo style": (as_tensor(shifted), torch.tensor(shifted_labels), demo_objects)}


def pretrain(settings: Settings, log=print) -> CLIP:
    """Train the demo backbone from scratch; returns the fp32 model."""
    torch.manual_seed(settings.seed)
    size = CONFIG.image_resolution
    start = time.time()
    pool, scenes = render_pool(settings.pool_size, settings.seed, size)
    log(f"rendered {len(scenes)} pictures in {time.time() - start:.0f} s")
    evaluation = evaluation_sets(settings, size)
    model = build_model(settings.seed)
    optimizer = _optimizer(model, settings)
    rng = np.random.default_rng([settings.seed, 3])
    order, cursor = rng.permutation(len(scenes)), 0
    for step in range(settings.steps):
        if cursor + settings.batch_size > len(order):
            order, cursor = rng.permutation(len(scenes)), 0
        batch = order[cursor:cursor + settings.batch_size]
        cursor += settings.batch_size
        tokens = clip_api.tokenize([world.caption(scenes[i], rng) for i in batch])
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, settings)
        loss = contrastive_loss(model, normalise(pool[torch.from_numpy(batch)]), tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == settings.steps - 1:
            log(f"step {step + 1}/{settings.steps}  loss {loss.item():.3f}  "
                f"temperature {model.logit_scale.exp().item():.1f}  {time.time() - start:.0f} s")
        if settings.eval_every and (step + 1) % settings.eval_every == 0 and step + 1 < settings.steps:
            report_zero_shot(model, evaluation, log)
    report_zero_shot(model, evaluation, log)
    return model.eval()


def report_zero_shot(model: CLIP, evaluation: dict, log) -> None:
    for name, (images, labels, objects) in evaluation.items():
        log(f"zero-shot accuracy, {name}: {100 * zero_shot_accuracy(model, images, labels, objects):.1f}% "
            f"({len(objects)} objects, '{TEMPLATE}')")


def state_dict_for_release(model: CLIP) -> dict[str, torch.Tensor]:
    """OpenAI's layout and precision: every floating tensor in fp16."""
    return {key: value.detach().half() if value.is_floating_point() else value.detach()
            for key, value in model.state_dict().items()}


def write_checkpoint(model: CLIP, path: str) -> str:
    """Write the fp16 state dict atomically; returns its SHA-256."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.part"
    save_openai_format(state_dict_for_release(model), partial)
    os.replace(partial, path)
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=bundled_path(DEMO_MODEL), help="output file (default: the shipped one)")
    for field, value in asdict(defaults).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the shipped file used 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = Settings(**{field: getattr(args, field) for field in asdict(defaults)})
    print(f"Pre-training {DEMO_MODEL} with {settings}")
    model = pretrain(settings)
    digest = write_checkpoint(model, args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 2 ** 20:.1f} MiB), SHA-256 {digest}")
    if os.path.abspath(args.out) == os.path.abspath(bundled_path(DEMO_MODEL)) and \
            BUNDLED_MODELS[DEMO_MODEL].sha256 != digest:
        print(f"The SHA-256 differs from the one in clip/bundled_models.py: update it to ship this file.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
