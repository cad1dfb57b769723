"""Train or evaluate one prompt-learning run (the command line of the official CoOp / MaPLe / PromptSRC
train.py). Config merge order: Dassl defaults + method keys -> --dataset-config-file -> --config-file ->
command-line flags -> trailing KEY VALUE overrides."""
import argparse
import os.path as osp
import sys
from typing import List, Optional

import torch

from dassl.config import ConfigError, get_cfg_default, merge_from_file, merge_from_list
from dassl.data.datasets import DATASET_REGISTRY
from dassl.engine import TRAINER_REGISTRY, build_trainer, plugins
from dassl.utils import (collect_env_info, get_most_similar_str_to_a_from_b, set_cuda_math, set_random_seed,
                         setup_logger, write_text_atomic)
from dassl.utils.distributed import (
    DistributedSetupError,
    LaunchEnv,
    agree_on_seed,
    init_distributed,
    is_main_process,
    shutdown_distributed,
    silence_stdout,
)

# The resolved config of a run, written into its output folder: the inference API (api.py) and predict.py
# rebuild the trained model from it.
CONFIG_FILE_NAME = "config.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=str, default="", help="path to dataset")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="", help="checkpoint directory (from which the training resumes)")
    parser.add_argument(
        "--seed", type=int, default=None, help="fixed seed when >= 0 (0 included), none when negative; default: the config's SEED"
    )
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to the trainer config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="path to the dataset config file")
    parser.add_argument("--trainer", type=str, default="", help="name of trainer")
    parser.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    parser.add_argument("--head", type=str, default="", help="name of head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument(
        "--import",
        dest="imports",
        metavar="MODULE",
        action="append",
        default=[],
        help="import this module before building (repeatable); a module on PYTHONPATH that registers its own "
        "trainer or dataset with @TRAINER_REGISTRY.register() / @DATASET_REGISTRY.register() (a built-in name is "
        "replaced for the run) and may define extend_cfg(cfg) for its keys; see docs/EXTENDING.md",
    )
    parser.add_argument(
        "opts", default=None, nargs=argparse.REMAINDER, help="modify config options using the command-line (KEY VALUE ...)"
    )
    return parser


def import_plugins(modules: List[str]) -> None:
    """Import the project's datasets and trainers (they register themselves), then any --import module
    (dassl/engine/plugins.py: replacing a built-in name, module-level extend_cfg, shadowed packages)."""
    import datasets  # noqa: F401
    import trainers  # noqa: F401

    plugins.import_plugins(modules, (TRAINER_REGISTRY, DATASET_REGISTRY))


def reset_cfg(cfg, args: argparse.Namespace) -> None:
    """Copy the command-line flags that were given into the config."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None:
        # the official `if args.seed:` silently dropped --seed 0
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head


def setup_cfg(args: argparse.Namespace):
    """Defaults -> method keys -> dataset YAML -> trainer YAML -> flags -> opts; frozen."""
    from trainers.config import extend_cfg  # after `trainers` is imported: it loops over the registry

    cfg = get_cfg_default()
    extend_cfg(cfg)
    plugins.apply_config_hooks(cfg, args.imports)
    if args.dataset_config_file:
        merge_from_file(cfg, args.dataset_config_file, role="dataset config file")
    if args.config_file:
        merge_from_file(cfg, args.config_file, role="trainer config file")
    reset_cfg(cfg, args)
    merge_from_list(cfg, args.opts or [])
    cfg.freeze()
    return cfg


def check_registered(kind: str, name: str, registry) -> None:
    names = sorted(registry.registered_names())
    if name not in names:
        closest = get_most_similar_str_to_a_from_b(name, names)
        hint = f"; did you mean {closest}?" if closest else ""
        raise ConfigError(f"unknown {kind} {name!r}; registered {kind}s: {', '.join(names)}{hint}")


def save_config(cfg) -> None:
    if cfg.OUTPUT_DIR and is_main_process():
        write_text_atomic(osp.join(cfg.OUTPUT_DIR, CONFIG_FILE_NAME), cfg.dump())


def print_args(args: argparse.Namespace, cfg) -> None:
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(vars(args)):
        print(f"{key}: {getattr(args, key)}")
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def main(args: argparse.Namespace):
    """Run the command; returns the trainer. Launched by torchrun (or srun with SLURM variables) it is one
    process of a data-parallel run (dassl/utils/distributed.py, docs/DISTRIBUTED.md)."""
    try:
        import_plugins(args.imports)
        cfg = setup_cfg(args)
        check_registered("trainer", cfg.TRAINER.NAME, TRAINER_REGISTRY)
        check_registered("dataset", cfg.DATASET.NAME, DATASET_REGISTRY)
        launch = init_distributed(cfg.USE_CUDA)
    except (ConfigError, DistributedSetupError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    try:
        return run(args, cfg, launch)
    except DistributedSetupError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as e:  # a diverged loss: every process of a distributed run stops with this line
        print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        if launch is not None:
            shutdown_distributed()


def run(args: argparse.Namespace, cfg, launch: Optional[LaunchEnv]):
    if is_main_process():
        setup_logger(cfg.OUTPUT_DIR)
    else:
        silence_stdout()
    if launch is not None:
        print(f"Distributed run: {launch.world_size} processes (launched by {launch.source}); batch sizes are global, "
              f"each process loads 1/{launch.world_size} of every batch")
    seed = agree_on_seed(cfg.SEED)
    if seed >= 0:
        # after the logger, so the seed is recorded in log.txt
        print(f"Setting fixed seed: {seed}")
        set_random_seed(seed)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        set_cuda_math(exact_fp32=cfg.CUDA_EXACT_FP32)

    print_args(args, cfg)
    if not args.eval_only:
        # training runs only: an evaluation folder holds no model to rebuild
        save_config(cfg)
    print("Collecting env info ...")
    print(f"** System info **\n{collect_env_info()}\n")

    trainer = build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return trainer
    if not args.no_train:
        trainer.train()
    return trainer


if __name__ == "__main__":
    main(build_parser().parse_args())
