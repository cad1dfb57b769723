"""The costs of one trainer, measured in one process (`python3 -m benchmarks.costs SPEC.json RESULT.json`, run by
benchmarks/cost_table.py): trainable parameters, forward FLOPs per training and per test image, images/s in
training and in evaluation, and peak memory, each phase through the trainer's own methods (`build_model`,
`forward_backward`, `model_inference`) on random inputs, as benchmarks/measure.py times them.

- Trainable parameters: what the trainer's SPEC declares it trains, counted in its built registered models
  (`trainers.method.trained_parameter_count`; a fitted classifier such as the linear probe's counts too).
- Forward FLOPs (torch.utils.flop_counter: matrix products, convolutions, attention; 2 per multiply-add):
  training, the forward of one training batch (`training_loss` where the trainer has one, its model in
  training mode otherwise) over the batch size: the text side each step encodes is shared by the batch;
  test, one evaluation batch after the first over its size, so a method whose class features are computed
  once per evaluation (the evaluation cache) is charged per image only for what each image costs; that
  once-per-evaluation part is `test_flops_once_per_evaluation` (the first batch minus a later one).
- Peak memory, evaluation first, then training: on CUDA `max_memory_allocated` from a reset at the start
  of each phase (model weights included); on the CPU the process's peak resident set (`ru_maxrss`, which
  cannot be reset): after evaluation it covers building and evaluating, after training everything.
"""
from __future__ import annotations

import statistics
import sys
from dataclasses import asdict

from benchmarks.measure import (Spec, build_trainer_on_classes, child_main, counted_flops, load_classnames, machine,
                                peak_memory, prepare_process, random_images, reset_cuda_peaks, time_evaluation,
                                time_training)
from trainers.method import EPOCHS, spec_of, trained_parameter_count

PARAMS_ONLY = "params"  # the phase of a spec that counts parameters only (Spec.phase "costs": everything)
FLOP_TEST_IMAGES = 2  # test FLOPs per image do not depend on the batch: a small one is counted


def training_batch(trainer, cfg) -> dict:
    import torch

    size = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
    return {"img": random_images(size, cfg.INPUT.SIZE[0], "cpu", cfg.SEED),
            "label": torch.arange(size) % trainer.num_classes}


def training_forward_flops(trainer, cfg) -> int:
    """FLOPs of the forward of one training batch, as `forward_backward` runs it (precision autocast included)."""
    import contextlib

    image, label = trainer.parse_batch_train(training_batch(trainer, cfg))
    trainer.set_model_mode("train")
    precision = getattr(trainer, "precision", None)
    autocast = precision.autocast() if precision is not None else contextlib.nullcontext()

    def forward():
        with autocast:
            if hasattr(trainer, "training_loss"):
                trainer.training_loss(image, label)
            else:
                trainer.model(image)

    return counted_flops(forward)


def test_forward_flops(trainer, cfg) -> tuple[int, int]:
    """(FLOPs of the first evaluation batch, FLOPs of a later one), batches of FLOP_TEST_IMAGES images."""
    import torch

    batch = random_images(FLOP_TEST_IMAGES, cfg.INPUT.SIZE[0], trainer.device, cfg.SEED)
    trainer.set_model_mode("eval")
    model = getattr(trainer, "model", None)
    if hasattr(model, "_cache"):
        model._cache = None  # a cold first batch: the once-per-evaluation work is counted in it
    with torch.no_grad():
        first = counted_flops(lambda: trainer.model_inference(batch))
        later = counted_flops(lambda: trainer.model_inference(batch))
    return first, later


def memory_figure(device, memory: dict) -> int:
    return memory["peak_cuda_allocated_bytes"] if device.type == "cuda" else memory["peak_rss_bytes"]


def measure_costs(spec: Spec) -> dict:
    """Every cost of `spec.trainer` on `spec.classes` class names (only the parameters for the phase
    PARAMS_ONLY); training figures are None for a trainer whose SPEC says it does not train by epochs of steps
    (a one-pass fit, or nothing)."""
    cfg = prepare_process(spec)
    trainer = build_trainer_on_classes(cfg, load_classnames(spec.classes), spec.shots)
    device = trainer.device
    training = spec_of(type(trainer)).training
    result = {"spec": asdict(spec), "trainer": spec.trainer, "backbone": cfg.MODEL.BACKBONE.NAME,
              "trainable_params": trained_parameter_count(trainer), "training": training,
              "train_batch_size": cfg.DATALOADER.TRAIN_X.BATCH_SIZE, "test_batch_size": cfg.DATALOADER.TEST.BATCH_SIZE,
              "machine": machine(device)}
    if spec.phase == PARAMS_ONLY:
        return result

    reset_cuda_peaks(device)
    evaluation = time_evaluation(trainer, cfg, spec.eval_images)
    result.update(eval_images_per_s=evaluation["images_per_s"],
                  peak_memory_eval_bytes=memory_figure(device, peak_memory(device)))
    first, later = test_forward_flops(trainer, cfg)
    result.update(test_flops_per_image=later / FLOP_TEST_IMAGES, test_flops_once_per_evaluation=first - later)

    result.update(train_images_per_s=None, train_flops_per_image=None, peak_memory_train_bytes=None)
    if training == EPOCHS:
        reset_cuda_peaks(device)
        wall, _ = time_training(trainer, cfg, spec.warmup, spec.steps)
        result.update(train_images_per_s=cfg.DATALOADER.TRAIN_X.BATCH_SIZE / statistics.median(wall),
                      peak_memory_train_bytes=memory_figure(device, peak_memory(device)))
        # after the timed steps: once-per-run work of the first step (e.g. PromptSRC's teacher) is not counted
        result["train_flops_per_image"] = training_forward_flops(trainer, cfg) / cfg.DATALOADER.TRAIN_X.BATCH_SIZE
    return result


if __name__ == "__main__":
    sys.exit(child_main("benchmarks.costs", measure_costs, sys.argv[1:]))
