"""A Dassl-style trainer and dataset written only against the public Dassl API, loaded into train.py with
`--import dassl_e2e_plugin` by the end-to-end tests (proves an official-style trainer runs unchanged).

TinyColors reads `<DATASET.ROOT>/tiny_colors/<class>/<i>.png` (made by dassl_testutils.make_color_dataset):
the first half of each class is train (few-shot sampled with DATASET.NUM_SHOTS), the rest test.
TinyLinear is a linear probe on pooled pixels behind a frozen 1x1 conv, trained with the config's optimizer
and scheduler, stepping the LR on the last batch of each epoch like the official prompt trainers.
"""
import os

import torch.nn as nn
import torch.nn.functional as F

from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import listdir_nohidden


@DATASET_REGISTRY.register()
class TinyColors(DatasetBase):
    dataset_dir = "tiny_colors"

    def __init__(self, cfg):
        self.dataset_dir = os.path.join(os.path.abspath(cfg.DATASET.ROOT), self.dataset_dir)
        train, test = [], []
        for label, classname in enumerate(listdir_nohidden(self.dataset_dir, sort=True)):
            files = listdir_nohidden(os.path.join(self.dataset_dir, classname), sort=True)
            items = [Datum(impath=os.path.join(self.dataset_dir, classname, f), label=label, classname=classname) for f in files]
            half = len(items) // 2
            train.extend(items[:half])
            test.extend(items[half:])
        train = self.generate_fewshot_dataset(train, num_shots=cfg.DATASET.NUM_SHOTS)
        super().__init__(train_x=train, val=test, test=test)


@TRAINER_REGISTRY.register()
class TinyLinear(TrainerX):
    def build_model(self):
        stem = nn.Conv2d(3, 3, 1)
        for p in stem.parameters():
            p.requires_grad_(False)
        self.model = nn.Sequential(stem, nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, self.num_classes))
        self.model.to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("linear_probe", self.model, self.optim, self.sched)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)[:2]
        output = self.model(image)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        loss_summary = {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return loss_summary
