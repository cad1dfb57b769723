"""Top-k accuracy of a batch."""
from typing import List, Sequence

import torch


def compute_accuracy(output, target: torch.Tensor, topk: Sequence[int] = (1,)) -> List[torch.Tensor]:
    """Percentage of rows of `output` (logits; the first element if a tuple/list) whose top-k contains the
    target, for each k, as 1-element float tensors (callers use `[0].item()`)."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    maxk = max(topk)
    batch_size = target.size(0)
    _, pred = output.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.view(1, -1).expand(maxk, -1))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / batch_size) for k in topk]
