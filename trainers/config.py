"""The method keys of the config tree: the union of the official MaPLe / CoOp / PromptSRC `extend_cfg`
(PROTOCOL.md §2.4) plus this project's own keys. train.py and the Python API call `extend_cfg` once,
after `get_cfg_default()` and before any YAML is merged (yacs refuses keys it does not know).

A trainer or dataset file can add keys of its own by defining a static method `extend_cfg(cfg)` on its
class; it is called here for every registered trainer and dataset, so a new method stays one file plus one
YAML. A module named with train.py's --import may also define a module-level `extend_cfg(cfg)` (what another
repository's train.py has); train.py runs it after this one (dassl/engine/plugins.py), so it may redefine
a default, type included.
"""
from yacs.config import CfgNode as CN

from clip import clip
from clip.openclip import resolve as resolve_openclip
from dassl.config import ConfigError


def _add_official_keys(cfg: CN) -> None:
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16
    cfg.TRAINER.COOP.CSC = False
    cfg.TRAINER.COOP.CTX_INIT = ""
    cfg.TRAINER.COOP.PREC = "fp16"
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"

    cfg.TRAINER.COCOOP = CN()
    cfg.TRAINER.COCOOP.N_CTX = 16
    cfg.TRAINER.COCOOP.CTX_INIT = ""
    cfg.TRAINER.COCOOP.PREC = "fp16"

    cfg.TRAINER.MAPLE = CN()
    cfg.TRAINER.MAPLE.N_CTX = 2
    cfg.TRAINER.MAPLE.CTX_INIT = "a photo of a"
    cfg.TRAINER.MAPLE.PREC = "fp16"
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = 9

    cfg.TRAINER.IVLP = CN()
    cfg.TRAINER.IVLP.N_CTX_VISION = 2
    cfg.TRAINER.IVLP.N_CTX_TEXT = 2
    cfg.TRAINER.IVLP.CTX_INIT = "a photo of a"
    cfg.TRAINER.IVLP.PREC = "fp16"
    cfg.TRAINER.IVLP.PROMPT_DEPTH_VISION = 9
    cfg.TRAINER.IVLP.PROMPT_DEPTH_TEXT = 9

    cfg.TRAINER.VPT = CN()
    cfg.TRAINER.VPT.N_CTX_VISION = 2
    cfg.TRAINER.VPT.CTX_INIT = "a photo of a"
    cfg.TRAINER.VPT.PREC = "fp16"
    cfg.TRAINER.VPT.PROMPT_DEPTH_VISION = 1

    cfg.TRAINER.PROMPTSRC = CN()
    cfg.TRAINER.PROMPTSRC.N_CTX_VISION = 4
    cfg.TRAINER.PROMPTSRC.N_CTX_TEXT = 4
    cfg.TRAINER.PROMPTSRC.CTX_INIT = "a photo of a"
    cfg.TRAINER.PROMPTSRC.PREC = "fp16"
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION = 9
    cfg.TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT = 9
    # ints, as in the official repo (yacs type-checks overrides against the default's type)
    cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT = 25
    cfg.TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT = 10
    cfg.TRAINER.PROMPTSRC.GPA_MEAN = 15
    cfg.TRAINER.PROMPTSRC.GPA_STD = 1

    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # all, base or new


def _add_project_keys(cfg: CN) -> None:
    # A local CLIP checkpoint file used instead of downloading MODEL.BACKBONE.NAME (offline clusters).
    cfg.MODEL.BACKBONE.PATH = ""
    # Where downloaded CLIP checkpoints are cached; empty = $CLIP_CACHE_DIR or ~/.cache/clip.
    cfg.MODEL.BACKBONE.CACHE_DIR = ""
    # Image mean/std with an OpenCLIP backbone: "backbone" (its pretrained config's, written into
    # INPUT.PIXEL_MEAN/STD by `apply_pixel_stats`) or "config" (INPUT.PIXEL_MEAN/STD as configured). Other
    # backbones always keep the configured values.
    cfg.INPUT.PIXEL_STATS = "backbone"
    # fp32 on CUDA as IEEE fp32: no TF32 convolutions, no cuDNN algorithm search (dassl.utils.set_cuda_math).
    # Off by default, as in the official code: "fp32" runs on Ampere/Hopper GPUs are then not bit-exact.
    cfg.CUDA_EXACT_FP32 = False

    # Exact speed-ups (same numbers, less work), all on by default; a benchmark's `--plain` mode turns
    # every one of them off to measure the official-style path.
    cfg.TRAINER.SPEEDUPS = CN()
    # Drop text positions after the EOT before the (causal) text transformer: each prompt is cut after its
    # own EOT and the prompts' tokens are packed into one matrix (attention runs per group of similar length).
    cfg.TRAINER.SPEEDUPS.TEXT_TRUNCATION = True
    # Encode once the leading positions that every class prompt holds identically (SOS, a shared context,
    # class-independent words; once per image for CoCoOp); each class encodes only its own tail.
    cfg.TRAINER.SPEEDUPS.SHARED_PREFIX = True
    # In eval mode, compute image-independent class features (and vision prompts) once, not per batch.
    cfg.TRAINER.SPEEDUPS.EVAL_CACHE = True
    # Attention through F.scaled_dot_product_attention instead of the explicit softmax(QK^T)V path.
    cfg.TRAINER.SPEEDUPS.FUSED_ATTENTION = True
    # Off by default, each with a cost (benchmarks/README.md has the figures):
    # activation checkpointing of the text encoder while training: same numbers, much less memory for
    # many classes, about one more text forward per step;
    cfg.TRAINER.SPEEDUPS.TEXT_CHECKPOINTING = False
    # torch.compile of every transformer block of both towers: compile time at the first call of each
    # new input shape, and numbers close to (not bit-identical with) the eager ones.
    cfg.TRAINER.SPEEDUPS.COMPILE = False
    # Classes per text-encoder call when no gradient is needed (bounds evaluation memory on 1000-class
    # datasets); 0 = all classes in one call. Not a speed-up: it only splits the same computation.
    cfg.TRAINER.EVAL_TEXT_CHUNK = 256


def extend_cfg(cfg: CN) -> None:
    """Add every method key (official and project), then the keys of every registered trainer and dataset
    class, and of every built-in trainer, that defines a static `extend_cfg(cfg)`."""
    _add_official_keys(cfg)
    _add_project_keys(cfg)
    from dassl.data.datasets import DATASET_REGISTRY
    from dassl.engine import TRAINER_REGISTRY
    from trainers import BUILT_IN_TRAINERS

    classes = [registry.get(name) for registry in (TRAINER_REGISTRY, DATASET_REGISTRY)
               for name in registry.registered_names()]
    # a built-in replaced by an --import module keeps its keys (the official CLIP_Adapter file has none)
    classes += [cls for cls in BUILT_IN_TRAINERS.values() if cls not in classes]
    for cls in classes:
        hook = getattr(cls, "extend_cfg", None)
        if callable(hook):
            hook(cfg)


PIXEL_STATS = ("backbone", "config")


def apply_pixel_stats(cfg: CN) -> None:
    """INPUT.PIXEL_STATS "backbone" with an OpenCLIP backbone: INPUT.PIXEL_MEAN/STD become that model's own
    (clip/openclip.py; no weights are read). Any other backbone, or "config": the configured values stay."""
    choice = cfg.INPUT.PIXEL_STATS
    if choice not in PIXEL_STATS:
        raise ConfigError(f"INPUT.PIXEL_STATS must be one of {', '.join(PIXEL_STATS)}; got {choice!r}")
    if choice == "config" or not clip.is_openclip_name(cfg.MODEL.BACKBONE.NAME):
        return
    try:
        model = resolve_openclip(cfg.MODEL.BACKBONE.NAME)
    except (ValueError, RuntimeError) as error:
        raise ConfigError(f"MODEL.BACKBONE.NAME {cfg.MODEL.BACKBONE.NAME!r}: {error}") from error
    cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = list(model.mean), list(model.std)
