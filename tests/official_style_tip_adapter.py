"""Tip-Adapter's cache, search and fine-tuning written the way the official gaopengcuhk/Tip-Adapter `utils.py` and
`main.py` write them: a config dict, keys as a [D, N] matrix (features in columns), `clip_weights` as [D, C],
`.cuda()` calls (tests run them inside `cuda_calls_kept_on_cpu`), and Tip-Adapter-F's keys as the weight of an
`nn.Linear` trained by AdamW(eps 1e-4) with a cosine schedule over every iteration. Used by
tests/test_tip_adapter.py as the reference for trainers/tip_adapter.py.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def cls_acc(output, target, topk=1):
    pred = output.topk(topk, 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    acc = float(correct[:topk].reshape(-1).float().sum())
    return 100 * acc / target.shape[0]


def build_cache_model(cfg, clip_model, train_loader_cache):
    cache_keys = []
    cache_values = []
    with torch.no_grad():
        for augment_idx in range(cfg["augment_epoch"]):
            train_features = []
            for images, target in train_loader_cache:
                images = images.cuda()
                image_features = clip_model.encode_image(images)
                train_features.append(image_features)
                if augment_idx == 0:
                    cache_values.append(target.cuda())
            cache_keys.append(torch.cat(train_features, dim=0).unsqueeze(0))
    cache_keys = torch.cat(cache_keys, dim=0).mean(dim=0)
    cache_keys /= cache_keys.norm(dim=-1, keepdim=True)
    cache_keys = cache_keys.permute(1, 0)
    cache_values = F.one_hot(torch.cat(cache_values, dim=0)).float()
    return cache_keys, cache_values


def search_hp(cfg, cache_keys, cache_values, features, labels, clip_weights, adapter=None):
    beta_list = [i * (cfg["search_scale"][0] - 0.1) / cfg["search_step"][0] + 0.1 for i in range(cfg["search_step"][0])]
    alpha_list = [i * (cfg["search_scale"][1] - 0.1) / cfg["search_step"][1] + 0.1 for i in range(cfg["search_step"][1])]
    best_acc = 0
    best_beta, best_alpha = 0, 0
    for beta in beta_list:
        for alpha in alpha_list:
            if adapter:
                affinity = adapter(features)
            else:
                affinity = features @ cache_keys
            cache_logits = ((-1) * (beta - beta * affinity)).exp() @ cache_values
            clip_logits = 100. * features @ clip_weights
            tip_logits = clip_logits + cache_logits * alpha
            acc = cls_acc(tip_logits, labels)
            if acc > best_acc:
                best_acc = acc
                best_beta = beta
                best_alpha = alpha
    return best_beta, best_alpha


class TipAdapterF:
    """The official `run_tip_adapter_F` training loop, one batch at a time (`step`)."""

    def __init__(self, cfg, cache_keys, cache_values, clip_weights, clip_model, iterations_per_epoch):
        self.cfg = cfg
        self.cache_values = cache_values
        self.clip_weights = clip_weights
        self.clip_model = clip_model
        self.adapter = nn.Linear(cache_keys.shape[0], cache_keys.shape[1], bias=False).to(clip_model.dtype).cuda()
        self.adapter.weight = nn.Parameter(cache_keys.t())
        self.optimizer = torch.optim.AdamW(self.adapter.parameters(), lr=cfg["lr"], eps=1e-4)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, cfg["train_epoch"] * iterations_per_epoch)

    def step(self, images, target):
        beta, alpha = self.cfg["init_beta"], self.cfg["init_alpha"]
        self.adapter.train()
        images, target = images.cuda(), target.cuda()
        with torch.no_grad():
            image_features = self.clip_model.encode_image(images)
            image_features /= image_features.norm(dim=-1, keepdim=True)
        affinity = self.adapter(image_features)
        cache_logits = ((-1) * (beta - beta * affinity)).exp() @ self.cache_values
        clip_logits = 100. * image_features @ self.clip_weights
        tip_logits = clip_logits + cache_logits * alpha
        loss = F.cross_entropy(tip_logits, target)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()
