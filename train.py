"""Train or evaluate one prompt-learning run (the command line of the official CoOp / MaPLe / PromptSRC
train.py). Config merge order: Dassl defaults + method keys -> --dataset-config-file -> --config-file ->
command-line flags -> trailing KEY VALUE overrides."""
import argparse
import os.path as osp
import sys
from typing import List, Optional

import torch

from dassl.config import ConfigError, get_cfg_default, merge_from_file, merge_from_list
from dassl.config.values import check_values
from dassl.data.datasets import DATASET_REGISTRY
from dassl.engine import TRAINER_REGISTRY, build_trainer, plugins
from dassl.engine.run_folder import (CONFIG_FILE_NAME, RunIdentity, check_run_folder, config_values, move_aside,
                                    read_run_config)
from dassl.utils import (collect_env_info, get_most_similar_str_to_a_from_b, keep_freed_memory, set_cuda_math,
                         set_random_seed, setup_logger, write_text_atomic)
from dassl.utils.distributed import (
    LaunchEnv,
    barrier,
    agree_on_seed,
    init_distributed,
    is_main_process,
    read_launch_env,
    shutdown_distributed,
    silence_stdout,
)

from dassl.utils.errors import UsageError, error_line, run_command

# The default of OUTPUT_DIR (Dassl's): named in errors, since a user who gave no --output-dir may not know it.
DEFAULT_OUTPUT_DIR = "./output"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=str, default="", help="path to dataset")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="",
                        help="output folder of an interrupted run of this config to resume from (must exist)")
    parser.add_argument("--force", action="store_true",
                        help="start over when the output folder holds a run: move it aside to <folder>.old-N "
                             "(never deleted) instead of stopping")
    parser.add_argument("--check-run-folder", action="store_true",
                        help="only check that the output folder holds no run or a run of this same config "
                             "(exit 0), else print why not (exit 2); nothing is run or written")
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
    parser.add_argument("--model-dir", type=str, default="",
                        help="with --eval-only: the output folder of the run to evaluate, or one checkpoint file of it")
    parser.add_argument("--load-epoch", type=int,
                        help="with --eval-only and a --model-dir folder: evaluate model.pth.tar-<epoch> "
                             "(default model-best.pth.tar)")
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


def default_cfg(args: argparse.Namespace):
    """Dassl defaults + every method's keys (built-in, registered, --import'ed): the config before any file."""
    from trainers.config import extend_cfg  # after `trainers` is imported: it loops over the registry

    cfg = get_cfg_default()
    extend_cfg(cfg)
    plugins.apply_config_hooks(cfg, args.imports)
    return cfg


def setup_cfg(args: argparse.Namespace):
    """Defaults -> method keys -> dataset YAML -> trainer YAML -> flags -> opts -> an OpenCLIP backbone's image
    statistics (INPUT.PIXEL_STATS); frozen."""
    from trainers.config import apply_pixel_stats

    cfg = default_cfg(args)
    if args.dataset_config_file:
        merge_from_file(cfg, args.dataset_config_file, role="dataset config file")
    if args.config_file:
        merge_from_file(cfg, args.config_file, role="trainer config file")
    reset_cfg(cfg, args)
    merge_from_list(cfg, args.opts or [])
    apply_pixel_stats(cfg)
    cfg.freeze()
    return cfg


def check_registered(kind: str, name: str, registry) -> None:
    names = sorted(registry.registered_names())
    if name not in names:
        closest = get_most_similar_str_to_a_from_b(name, names)
        hint = f"; did you mean {closest}?" if closest else ""
        raise ConfigError(f"unknown {kind} {name!r}; registered {kind}s: {', '.join(names)}{hint}")


def check_flags(args: argparse.Namespace) -> None:
    """Refuse flags that would do nothing in the given mode, or contradict each other."""
    if not args.eval_only:
        for flag, value in (("--model-dir", args.model_dir), ("--load-epoch", args.load_epoch)):
            if value not in ("", None):
                raise UsageError(f"{flag} is used only with --eval-only (training resumes from --output-dir); "
                                 f"add --eval-only to evaluate that model, or drop {flag}")
    elif args.resume or args.no_train:
        flag = "--resume" if args.resume else "--no-train"
        raise UsageError(f"{flag} has no effect with --eval-only; give the run to evaluate as --model-dir")
    if args.force and args.resume:
        raise UsageError("--force moves the output folder's run aside, so there would be nothing to --resume; "
                         "give one of the two")
    if args.model_dir and osp.isfile(args.model_dir) and args.load_epoch is not None:
        raise UsageError(f"--model-dir {args.model_dir} names one checkpoint file, which is the one evaluated; "
                         "drop --load-epoch (or give the run folder with --load-epoch)")
    if args.model_dir and not osp.exists(args.model_dir):
        raise UsageError(f"--model-dir {args.model_dir}: no such folder or file; give the output folder of a "
                         "trained run, or one of its checkpoint files")
    if args.resume and not osp.isdir(args.resume):
        raise UsageError(f"--resume {args.resume}: no such folder; give the output folder of the run to resume "
                         "(without --resume, a run resumes from its own --output-dir)")


def check_model_trainer(cfg, model_dir: str) -> None:
    """--model-dir of a run of another trainer (its config.yaml says which) is named before any model is built."""
    run_dir = model_dir if osp.isdir(model_dir) else osp.dirname(osp.dirname(osp.abspath(model_dir)))
    saved = read_run_config(run_dir)
    if saved is not None and saved.get("TRAINER.NAME") != cfg.TRAINER.NAME:
        raise UsageError(f"--model-dir {model_dir} holds a model of a {saved.get('TRAINER.NAME')} run (its "
                         f"{CONFIG_FILE_NAME}), but this command builds {cfg.TRAINER.NAME}; give --trainer "
                         f"{saved.get('TRAINER.NAME')} and that run's --config-file")


def run_identity(cfg, args: argparse.Namespace) -> RunIdentity:
    """What of a run folder's config.yaml this command's config is compared on: not the keys absent there and
    at their default here (or the reverse), nor the config nodes of methods other than cfg's trainer."""
    from trainers.method import other_method_nodes

    return RunIdentity(config_values(default_cfg(args)), other_method_nodes(cfg.TRAINER.NAME))


def prepare_run_folder(cfg, args: argparse.Namespace) -> bool:
    """Make sure the output folder holds nothing but this config's run, before anything is written: with
    --force another run there is moved aside. Returns whether the folder already holds this config's run."""
    if not cfg.OUTPUT_DIR:
        return False
    role = "the output folder" if args.output_dir else "the default output folder (no --output-dir given)"
    identity = run_identity(cfg, args)
    if args.resume:
        check_run_folder(cfg, args.resume, role="the --resume folder", identity=identity)
    if args.force:
        if is_main_process():
            moved = move_aside(cfg.OUTPUT_DIR)
            if moved:
                print(f"--force: moved the run in {cfg.OUTPUT_DIR} aside to {moved}")
        barrier()  # no process may read the old run's files after this point
        return False
    return check_run_folder(cfg, cfg.OUTPUT_DIR, role=role, identity=identity)


def save_config(cfg) -> None:
    """config.yaml: written once, by the run that owns the folder."""
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
    """Run the command; returns the trainer (None for --check-run-folder). A user error ends the process with
    one line `train.py: error: ...` and exit status 2 (dassl/utils/errors.py). Launched by torchrun (or srun
    with SLURM variables) it is one process of a data-parallel run (dassl/utils/distributed.py,
    docs/DISTRIBUTED.md)."""
    return run_command("train.py", lambda: _main(args))


def _main(args: argparse.Namespace):
    check_flags(args)
    import_plugins(args.imports)
    cfg = setup_cfg(args)
    check_registered("trainer", cfg.TRAINER.NAME, TRAINER_REGISTRY)
    check_registered("dataset", cfg.DATASET.NAME, DATASET_REGISTRY)
    check_values(cfg, training=not args.eval_only)
    if args.model_dir:
        check_model_trainer(cfg, args.model_dir)
    if args.check_run_folder:
        check_run_folder(cfg, cfg.OUTPUT_DIR, identity=run_identity(cfg, args))
        return None
    from trainers.method import check_launch  # after the plugins: their trainers declare SPECs too

    launch = read_launch_env()
    check_launch(TRAINER_REGISTRY.get(cfg.TRAINER.NAME), launch.world_size if launch else 1)
    launch = init_distributed(cfg.USE_CUDA)
    on_cpu = plugins.keeps_cuda_calls_on_cpu(args.imports, cfg.USE_CUDA)
    if on_cpu:
        print(f"train.py: note: {plugins.CUDA_CALLS_NOTE}", file=sys.stderr)
    try:
        has_run = prepare_run_folder(cfg, args)
        with plugins.cuda_calls_kept_on_cpu(on_cpu):
            return run(args, cfg, launch, has_run)
    except FloatingPointError as e:  # a diverged loss: every process of a distributed run stops with this line
        print(error_line("train.py", e), file=sys.stderr)
        sys.exit(1)
    finally:
        if launch is not None:
            shutdown_distributed()


def run(args: argparse.Namespace, cfg, launch: Optional[LaunchEnv], has_run: bool = False):
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
    elif keep_freed_memory():
        print("CPU run: freed memory is kept for the next tensors (glibc malloc; dassl/utils/host_memory.py)")

    print_args(args, cfg)
    if not has_run:
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
