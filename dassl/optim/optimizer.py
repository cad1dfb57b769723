"""`build_optimizer(model, optim_cfg, param_groups=None)` with Dassl's parameter grouping."""
import warnings

import torch
import torch.nn as nn

AVAI_OPTIMS = ["adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"]


def _staged_param_groups(model: nn.Module, optim_cfg) -> list:
    # Children named in NEW_LAYERS train at LR, all other children at LR * BASE_LR_MULT.
    if not isinstance(model, nn.Module):
        raise TypeError("OPTIM.STAGED_LR needs an nn.Module (it groups parameters by child module)")
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    new_layers = optim_cfg.NEW_LAYERS
    if isinstance(new_layers, str):
        new_layers = [new_layers]
    base_params, new_params = [], []
    for name, module in model.named_children():
        (new_params if name in new_layers else base_params).extend(module.parameters())
    return [{"params": base_params, "lr": optim_cfg.LR * optim_cfg.BASE_LR_MULT}, {"params": new_params}]


def build_optimizer(model, optim_cfg, param_groups=None) -> torch.optim.Optimizer:
    """Build the optimizer named by `optim_cfg.NAME` over `model` (an nn.Module or an iterable of parameters).

    No filtering on requires_grad (as in Dassl): frozen parameters never get a gradient, so every optimizer
    skips them, and the param-group layout matches official optimizer state dicts.
    """
    name = optim_cfg.NAME
    if name not in AVAI_OPTIMS:
        raise ValueError(f"OPTIM.NAME must be one of {AVAI_OPTIMS}, but got {name!r}")
    lr = optim_cfg.LR
    weight_decay = optim_cfg.WEIGHT_DECAY
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)

    if param_groups is not None and optim_cfg.STAGED_LR:
        warnings.warn("OPTIM.STAGED_LR is ignored because param_groups were given; build the stages yourself.")
    if param_groups is None:
        if optim_cfg.STAGED_LR:
            param_groups = _staged_param_groups(model, optim_cfg)
        elif isinstance(model, nn.Module):
            param_groups = model.parameters()
        else:
            param_groups = model

    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(
            param_groups, lr=lr, weight_decay=weight_decay, betas=betas, eps=optim_cfg.ADAM_EPS,
            amsgrad=(name == "amsgrad")
        )
    if name == "sgd":
        return torch.optim.SGD(
            param_groups,
            lr=lr,
            momentum=optim_cfg.MOMENTUM,
            weight_decay=weight_decay,
            dampening=optim_cfg.SGD_DAMPNING,
            nesterov=optim_cfg.SGD_NESTEROV,
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(
            param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=weight_decay, alpha=optim_cfg.RMSPROP_ALPHA
        )
    if name == "radam":
        # torch's RAdam (Dassl ships its own variant; no method config uses it)
        return torch.optim.RAdam(param_groups, lr=lr, weight_decay=weight_decay, betas=betas)
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay, betas=betas)
