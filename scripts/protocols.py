"""The facts of the papers' protocols that the sweep, the table entry points and the tables share: which
datasets each protocol runs on, in the papers' order, the methods' order in the papers' tables, and the
published numbers (PROTOCOL.md §5.2, §7).

Cross-dataset transfer (MaPLe Table 2) and domain generalisation (its Table 3) train on a source dataset and
evaluate on targets; the source's targets are listed here for ImageNet (the papers') and for the demo
(docs/DEMO.md). Few-shot learning (CoOp's curves, PromptSRC's few-shot table) trains on each dataset with
1, 2, 4, 8 and 16 shots.
"""
from __future__ import annotations

BENCHMARKS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
              "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
FEWSHOT_SHOTS = (1, 2, 4, 8, 16)

# source -> (cross-dataset targets, domain-generalisation targets), in the papers' column order
TARGETS = {
    "imagenet": (BENCHMARKS[1:], ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")),
    "demo": (("demo_nature", "demo_things", "demo_colours"),
             ("demo_photo", "demo_drawing", "demo_painting", "demo_mosaic")),
}
PROTOCOLS = ("base2new", "xd", "dg", "fewshot")
DEFAULT_SOURCE = "imagenet"

# The methods of every table in the papers' order (zero-shot CLIP, the linear probe, CoOp, CoCoOp, then the
# later prompt methods as PromptSRC's and TCP's tables list them, then the adapters in their papers' order);
# any other trainer follows, alphabetically.
METHOD_ORDER = ("ZeroshotCLIP", "ZeroshotCLIP2", "LinearProbeCLIP", "CoOp", "CoCoOp", "ProGrad", "KgCoOp", "MaPLe",
                "PromptSRC", "TCP", "CLIP_Adapter", "TipAdapter", "TipAdapterF")

# The papers' rows, keyed by the (trainer, config) that produces them with these scripts: ViT-B/16, 16 shots,
# averaged over three seeds. Cross-dataset: MaPLe arXiv 2210.03117 Table 2 (its CoOp and CoCoOp rows are
# CoCoOp's, arXiv 2203.05557 Table 2) and PromptSRC arXiv 2307.06948; columns imagenet, the 10 targets in
# BENCHMARKS order, average. Domain generalisation: MaPLe Table 3 and PromptSRC; columns imagenet, imagenetv2,
# imagenet_sketch, imagenet_a, imagenet_r, average. Each row's average is the mean of its targets to the
# rounding of the papers (tests/test_protocol_tables.py checks it).
PUBLISHED_XD = {
    ("CoOp", "vit_b16_ep50"): (71.51, 93.70, 89.14, 64.51, 68.71, 85.30, 18.47, 64.15, 41.92, 46.39, 66.55, 63.88),
    ("CoCoOp", "vit_b16_c4_ep10_batch1_ctxv1"):
        (71.02, 94.43, 90.14, 65.32, 71.88, 86.06, 22.94, 67.36, 45.73, 45.37, 68.21, 65.74),
    ("MaPLe", "vit_b16_c2_ep5_batch4_2ctx_cross_datasets"):
        (70.72, 93.53, 90.49, 65.57, 72.23, 86.20, 24.74, 67.01, 46.49, 48.06, 68.69, 66.30),
    ("PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets"):
        (71.27, 93.60, 90.25, 65.70, 70.25, 86.15, 23.90, 67.10, 46.87, 45.50, 68.75, 65.81),
}
PUBLISHED_DG = {
    ("ZeroshotCLIP", "vit_b16"): (66.73, 60.83, 46.15, 47.77, 73.96, 57.18),
    ("CoOp", "vit_b16_ep50"): (71.51, 64.20, 47.99, 49.71, 75.21, 59.28),
    ("CoCoOp", "vit_b16_c4_ep10_batch1_ctxv1"): (71.02, 64.07, 48.75, 50.63, 76.18, 59.91),
    ("MaPLe", "vit_b16_c2_ep5_batch4_2ctx_cross_datasets"): (70.72, 64.07, 49.15, 50.90, 76.98, 60.27),
    ("PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets"): (71.27, 64.35, 49.55, 50.90, 77.80, 60.65),
}
PUBLISHED_SOURCES = {"xd": "MaPLe Table 2 / PromptSRC", "dg": "MaPLe Table 3 / PromptSRC"}


def targets(protocol: str, source: str) -> tuple[str, ...]:
    """The known targets of `protocol` ("xd" or "dg") for `source`; () for a source without known targets."""
    known = TARGETS.get(source)
    if known is None:
        return ()
    return known[0] if protocol == "xd" else known[1]


def published(protocol: str, source: str, trainer: str, config: str) -> tuple[float, ...] | None:
    """The published row of (trainer, config) in `protocol`'s table: source, targets, average; only for the
    papers' source, ImageNet."""
    if source != "imagenet":
        return None
    return {"xd": PUBLISHED_XD, "dg": PUBLISHED_DG}.get(protocol, {}).get((trainer, config))
