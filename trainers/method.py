"""What a method declares about itself, in one place, so that the harness (freezing, optimizer, checkpoints,
parameter count, scripts, sweep, tables, generic tests) asks the trainer class instead of a hand-written list.

A trainer class carries a `SPEC` class attribute:

    @TRAINER_REGISTRY.register()
    class MyMethod(PromptTrainer):
        SPEC = MethodSpec(
            trained=("prompt_learner",),        # prefixes of the parameter names that are trained
            training=EPOCHS,                    # EPOCHS (gradient steps), FIT (one pass) or NOTHING (zero-shot)
            transfers_to_unseen=True,           # scores classes it was not trained on (base -> novel, xd)
            precisions=("fp16", "fp32", "amp", "bf16"),
            precision_key="TRAINER.MYMETHOD.PREC",
            config_dir="MyMethod",              # the folder under configs/trainers/ ("" = the trainer's name)
            default_config="vit_b16",           # the config the scripts use on real datasets ...
            protocol_configs={"xd": "vit_b16_xd"},  # ... unless a protocol names its own
        )

`MethodSpec` fields (all optional; the defaults are a prompt method's):

- `trained`: names of the trainable parts, as prefixes of the trainer model's parameter names
  (`prompt_learner`, `adapter`, `head`, ...). `PromptTrainer` makes exactly the parameters under them trainable
  (`freeze_all_but_trained`), checks that none of them is a frozen CLIP weight and that each prefix names at
  least one parameter, gives only them to the optimizer, counts them (`trained_parameter_count`), and the
  checkpoints hold them (plus buffers): frozen parameters are never saved. A prefix may also be a registered
  model's name (the linear probe's `linear_head`, fitted without gradients). Empty (`()`): nothing declared,
  what the trainer leaves requiring a gradient counts (zero-shot CLIP: nothing).
- `training`: `EPOCHS` (optimizer steps over OPTIM.MAX_EPOCH epochs, resumable), `FIT` (a closed-form or
  one-pass fit done in the first epoch: the linear probe, a cache model), `NOTHING` (nothing is trained: the
  scripts only evaluate it, as zero-shot CLIP).
- `transfers_to_unseen`: False when it can only score its training classes (no base-to-novel runs, no
  cross-dataset rows; domain-generalisation targets only within its classes).
- `precisions`: the values its precision key accepts (a subset of `PRECISIONS`); tests run each of them.
- `precision_key`: the full config key of its precision ("" = `TRAINER.<METHOD_KEY>.PREC` for a
  `PromptTrainer`).
- `config_dir`: its folder under `configs/trainers/` ("" = the registered name).
- `default_config` / `protocol_configs`: the config name (without .yaml) the scripts use on real datasets
  for a protocol (`base2new`, `xd`, `dg`, `fewshot`, `zeroshot`): `protocol_configs[protocol]`, else
  `default_config`; "" means the scripts need `CFG=`. The demo datasets always use `demo.yaml`.
- `distributed`: False when it runs in one process only (no torchrun).
- `config_nodes`: further `TRAINER.<NODE>` config nodes it reads, besides TRAINER.<METHOD_KEY> and its
  precision key's node (e.g. a method reading CoOp's keys: `("COOP",)`). A run folder's identity is its own
  nodes plus the shared keys: other methods' nodes cannot change its numbers (dassl/engine/run_folder.py).

A trainer without `SPEC` (a Dassl-style file run through `--import`) keeps working unchanged: `spec_of` gives
it `MethodSpec(trained=())` (it freezes and optimizes what it likes; counted: what requires a gradient) with its
own name as config folder. `PromptTrainer` subclasses inherit `MethodSpec()` (trained `prompt_learner`).

Helpers: `spec_of(cls)` (the completed declaration), `registered_specs()` (every registered trainer's),
`MethodSpec.config_for(protocol)`, `freeze_all_but_trained(model, prefixes, frozen)`, `is_trained(name,
prefixes)`, `trained_parameter_count(trainer)`, `own_config_nodes(cls)`, `other_method_nodes(name)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Optional

import torch.nn as nn

from dassl.config import ConfigError

PRECISIONS = ("fp16", "fp32", "amp", "bf16")
EPOCHS, FIT, NOTHING = "epochs", "fit", "nothing"
TRAININGS = (EPOCHS, FIT, NOTHING)
PROTOCOLS = ("base2new", "xd", "dg", "fewshot", "zeroshot")


@dataclass(frozen=True)
class MethodSpec:
    """A method's declaration; see the module docstring for each field."""

    trained: tuple[str, ...] = ("prompt_learner",)
    training: str = EPOCHS
    transfers_to_unseen: bool = True
    precisions: tuple[str, ...] = PRECISIONS
    precision_key: str = ""
    config_dir: str = ""
    default_config: str = ""
    protocol_configs: Mapping[str, str] = field(default_factory=dict)
    distributed: bool = True
    config_nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Declarations are read by every script: a typo fails when the trainer module is imported.
        if self.training not in TRAININGS:
            raise ValueError(f"MethodSpec.training must be one of {', '.join(TRAININGS)}; got {self.training!r}")
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            raise ValueError(f"MethodSpec.precisions must be a non-empty subset of {PRECISIONS}; got {self.precisions}")
        protocols = [p for p in self.protocol_configs if p not in PROTOCOLS]
        if protocols:
            raise ValueError(f"MethodSpec.protocol_configs: unknown protocols {protocols}; valid: {', '.join(PROTOCOLS)}")
        for name in ("trained", "config_nodes"):
            if isinstance(getattr(self, name), str):
                raise ValueError(f"MethodSpec.{name} is a tuple of names; write ({getattr(self, name)!r},)")

    def config_for(self, protocol: str) -> str:
        """The default config name of `protocol` ("" when the method has none: the scripts then need CFG=)."""
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
        if protocol == "dg" and "dg" not in self.protocol_configs:
            protocol = "xd"  # domain generalisation evaluates the cross-dataset source training
        return self.protocol_configs.get(protocol, self.default_config)


def spec_of(trainer_class: type) -> MethodSpec:
    """The declaration of a registered trainer class, completed: `config_dir` defaults to the class name and
    `precision_key` to TRAINER.<METHOD_KEY>.PREC when the class has a METHOD_KEY. A class without SPEC gets
    the defaults (a Dassl-style trainer of another repository)."""
    spec = getattr(trainer_class, "SPEC", None) or MethodSpec(trained=())
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"{trainer_class.__name__}.SPEC must be a trainers.method.MethodSpec; got {type(spec).__name__}")
    method_key = getattr(trainer_class, "METHOD_KEY", "")
    return replace(
        spec,
        config_dir=spec.config_dir or trainer_class.__name__,
        precision_key=spec.precision_key or (f"TRAINER.{method_key}.PREC" if method_key else ""),
    )


def check_launch(trainer_class: type, world_size: int) -> None:
    """A method that declares `distributed=False` refuses a multi-process launch (torchrun, srun) before anything
    is built, in one line."""
    if world_size > 1 and not spec_of(trainer_class).distributed:
        raise ConfigError(f"{trainer_class.__name__} runs in one process only (its SPEC declares distributed=False), "
                          f"but this launch has {world_size} processes: start it as `python train.py ...` without "
                          "torchrun or srun (docs/DISTRIBUTED.md)")


def own_config_nodes(trainer_class: type) -> tuple[str, ...]:
    """The TRAINER.<NODE> nodes the trainer reads: TRAINER.<METHOD_KEY>, its precision key's node and its
    declared `config_nodes`; () for a trainer that declares none of them (its nodes are unknown)."""
    spec = spec_of(trainer_class)
    nodes = [getattr(trainer_class, "METHOD_KEY", ""), *spec.config_nodes]
    parts = spec.precision_key.split(".")
    if len(parts) == 3 and parts[0] == "TRAINER":
        nodes.append(parts[1])
    return tuple(dict.fromkeys(node for node in nodes if node))


def other_method_nodes(trainer_name: str) -> tuple[str, ...]:
    """The config nodes of every registered method that `trainer_name` does not read; () when its own nodes
    are unknown (a Dassl-style trainer without SPEC or METHOD_KEY), so that every node counts for it."""
    from dassl.engine import TRAINER_REGISTRY

    names = TRAINER_REGISTRY.registered_names()
    if trainer_name not in names:
        return ()
    own = own_config_nodes(TRAINER_REGISTRY.get(trainer_name))
    if not own:
        return ()
    every = {node for name in names for node in own_config_nodes(TRAINER_REGISTRY.get(name))}
    return tuple(sorted(every - set(own)))


def is_trained(name: str, prefixes: Iterable[str]) -> bool:
    """Whether the parameter `name` lies under one of the declared prefixes (whole name components only:
    "adapter" covers "adapter.fc.weight", not "adapter2.weight")."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def freeze_all_but_trained(model: nn.Module, prefixes: Iterable[str], frozen: Optional[nn.Module] = None) -> list[str]:
    """Make exactly the parameters under `prefixes` trainable; verify that each prefix names at least one
    parameter and that none of them belongs to `frozen` (the CLIP backbone). Returns the trainable names."""
    prefixes = tuple(prefixes)
    names = [name for name, _ in model.named_parameters()]
    empty = [p for p in prefixes if not any(is_trained(name, (p,)) for name in names)]
    if empty:
        tops = sorted({name.split(".")[0] for name in names})
        raise ConfigError(f"the method declares trained parts {list(empty)} that hold no parameter of the model; "
                          f"its top-level parts are {tops}")
    for name, param in model.named_parameters():
        param.requires_grad_(is_trained(name, prefixes))
    frozen_ids = {id(p) for p in frozen.parameters()} if frozen is not None else set()
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    leaked = [name for name, p in model.named_parameters() if p.requires_grad and id(p) in frozen_ids]
    if leaked:
        raise RuntimeError(f"CLIP weights would be trained (a declared trained part {list(prefixes)} holds them): "
                           f"{leaked}")
    return trainable


def trained_parameter_count(trainer) -> int:
    """Elements of the parameters a built trainer trains, over its registered models: those under its declared
    prefixes (a parameter's name inside its model or "<registered name>.<name>": CoOp registers its prompt
    learner as `prompt_learner`), or, when it declares none (no SPEC), those that require a gradient. Shared
    tensors are counted once."""
    prefixes = spec_of(type(trainer)).trained
    seen, total = set(), 0
    for registered in trainer.get_model_names():
        named = list(trainer._models[registered].named_parameters())
        # A model whose own names hold the prefixes is judged by them alone: VPT registers its whole model under
        # the name "prompt_learner", which must not make "prompt_learner.clip_model.*" count as trained.
        own_names = any(is_trained(name, prefixes) for name, _ in named)
        for name, param in named:
            full_name = name if own_names else f"{registered}.{name}"
            chosen = is_trained(full_name, prefixes) if prefixes else param.requires_grad
            if chosen and id(param) not in seen:
                seen.add(id(param))
                total += param.numel()
    return total


def registered_specs() -> dict[str, MethodSpec]:
    """Every registered trainer's completed declaration, by name (importing `trainers` registers the built-ins)."""
    import trainers  # noqa: F401
    from dassl.engine import TRAINER_REGISTRY

    return {name: spec_of(TRAINER_REGISTRY.get(name)) for name in TRAINER_REGISTRY.registered_names()}
