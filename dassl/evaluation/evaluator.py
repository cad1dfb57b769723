"""The `Classification` evaluator: accuracy, error, macro F1 (and optional per-class accuracy, confusion matrix)."""
import os.path as osp
from collections import OrderedDict, defaultdict
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from dassl.utils.atomic import atomic_write

from .build import EVALUATOR_REGISTRY


class EvaluatorBase:
    """reset() before an evaluation, process(output, target) per batch, evaluate() at the end."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, mo, gt) -> None:
        raise NotImplementedError

    def evaluate(self) -> "OrderedDict[str, float]":
        raise NotImplementedError

    def gather(self, all_gather: Callable[[Any], List[Any]]) -> None:
        """Replace what this process recorded by what every process recorded (distributed evaluation);
        `all_gather(obj)` returns every process's obj."""
        raise NotImplementedError(f"{type(self).__name__} cannot merge records across processes: implement gather()")


def macro_f1_score(y_true: List[int], y_pred: List[int]) -> float:
    """Mean F1 over the labels present in `y_true` (sklearn's f1_score(average="macro",
    labels=unique(y_true)); a label never predicted correctly scores 0)."""
    y_true_arr = np.asarray(y_true)
    y_pred_arr = np.asarray(y_pred)
    scores = []
    for label in np.unique(y_true_arr):
        tp = np.sum((y_pred_arr == label) & (y_true_arr == label))
        fp = np.sum((y_pred_arr == label) & (y_true_arr != label))
        fn = np.sum((y_pred_arr != label) & (y_true_arr == label))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom > 0 else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def confusion_matrix_normalized(y_true: List[int], y_pred: List[int]) -> torch.Tensor:
    """Row-normalised confusion matrix over the sorted labels seen in either list (rows = true labels)."""
    labels = sorted(set(y_true) | set(y_pred))
    index = {label: i for i, label in enumerate(labels)}
    cmat = torch.zeros(len(labels), len(labels), dtype=torch.float64)
    for t, p in zip(y_true, y_pred):
        cmat[index[t], index[p]] += 1
    return cmat / cmat.sum(dim=1, keepdim=True).clamp_min(1)


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    """Counts top-1 hits (argmax, first index on ties) and prints Dassl's result block."""

    def __init__(self, cfg, lab2cname: Optional[Dict[int, str]] = None, **kwargs) -> None:
        super().__init__(cfg)
        self._lab2cname = lab2cname
        self._per_class_res = None
        if cfg.TEST.PER_CLASS_RESULT and lab2cname is None:
            raise ValueError("TEST.PER_CLASS_RESULT needs the label -> class name map (lab2cname)")
        self.reset()

    def reset(self) -> None:
        self._correct = 0
        self._total = 0
        self._y_true: List[int] = []
        self._y_pred: List[int] = []
        if self.cfg.TEST.PER_CLASS_RESULT:
            self._per_class_res = defaultdict(list)

    def process(self, mo: torch.Tensor, gt: torch.Tensor) -> None:
        self._record(gt.tolist(), mo.max(1)[1].tolist())

    def _record(self, y_true: List[int], y_pred: List[int]) -> None:
        hits = [int(t == p) for t, p in zip(y_true, y_pred)]
        self._correct += sum(hits)
        self._total += len(y_true)
        self._y_true.extend(y_true)
        self._y_pred.extend(y_pred)
        if self._per_class_res is not None:
            for label, hit in zip(y_true, hits):
                self._per_class_res[label].append(hit)

    def gather(self, all_gather: Callable[[Any], List[Any]]) -> None:
        # every metric here is a function of the (label, prediction) pairs alone, not of their order
        records = all_gather((self._y_true, self._y_pred))
        self.reset()
        for y_true, y_pred in records:
            self._record(y_true, y_pred)

    def evaluate(self) -> "OrderedDict[str, float]":
        if self._total == 0:
            raise RuntimeError("Classification.evaluate() called before any batch was processed")
        results = OrderedDict()
        acc = 100.0 * self._correct / self._total
        err = 100.0 - acc
        macro_f1 = 100.0 * macro_f1_score(self._y_true, self._y_pred)
        results["accuracy"] = acc
        results["error_rate"] = err
        results["macro_f1"] = macro_f1
        print(
            "=> result\n"
            f"* total: {self._total:,}\n"
            f"* correct: {self._correct:,}\n"
            f"* accuracy: {acc:.1f}%\n"
            f"* error: {err:.1f}%\n"
            f"* macro_f1: {macro_f1:.1f}%"
        )

        if self._per_class_res is not None:
            print("=> per-class result")
            accs = []
            for label in sorted(self._per_class_res):
                res = self._per_class_res[label]
                correct, total = sum(res), len(res)
                class_acc = 100.0 * correct / total
                accs.append(class_acc)
                print(
                    f"* class: {label} ({self._lab2cname[label]})\t"
                    f"total: {total:,}\tcorrect: {correct:,}\tacc: {class_acc:.1f}%"
                )
            mean_acc = float(np.mean(accs))
            print(f"* average: {mean_acc:.1f}%")
            results["perclass_accuracy"] = mean_acc

        if self.cfg.TEST.COMPUTE_CMAT:
            save_path = osp.join(self.cfg.OUTPUT_DIR, "cmat.pt")
            cmat = confusion_matrix_normalized(self._y_true, self._y_pred)
            atomic_write(save_path, lambda f: torch.save(cmat, f))
            print(f"Confusion matrix is saved to {save_path}")
        return results
