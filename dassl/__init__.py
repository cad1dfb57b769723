"""The subset of Dassl.pytorch (KaiyangZhou, v0.6.3) that the CoOp / MaPLe / PromptSRC trainers, datasets and
train.py use, under the same import paths and with the same result-deciding behaviour (see
shared/reference/PROTOCOL.md §1-§2). Written for current PyTorch: the warm-up scheduler works, resume continues
the LR schedule, and checkpoints load with `torch.load(weights_only=True)`."""

__version__ = "0.6.3"
