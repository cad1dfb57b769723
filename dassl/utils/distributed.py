"""Data-parallel training across processes (torchrun, or SLURM's srun) with `torch.distributed`.

What a distributed run changes, and why it still reproduces the single-process run:
- Batch sizes in the config are GLOBAL: each of the W processes loads 1/W of every batch (`shard_loader`),
  drawn from the one order that rank 0's sampler produced, so the published hyper-parameters mean the
  same at any W.
- Only the trainable parameters (the prompts) are synchronised: they are broadcast from rank 0 once, and
  every gradient is averaged over the processes as soon as backward has accumulated it
  (`synchronize_trainable_parameters`). Averaging per-shard mean losses over equal shards is the mean over
  the whole batch, so the optimizer steps exactly as one process on the whole batch would. The hooks fire
  inside backward, before any optimizer or GradScaler sees the gradient, which is why the trainers'
  own `forward_backward` (which steps the optimizer itself) needs no change.
- Evaluation: each process scores a shard of the set, the evaluator's records are gathered and rank 0
  computes (and prints) the full-set result, which every process then receives (`evaluate_gathered`).
- Rank 0 alone writes: log, tensorboard, checkpoints. The other ranks' stdout is silenced; their stderr
  (warnings, errors) is kept.

With WORLD_SIZE unset or 1 nothing here is initialised and every helper is a no-op, so a single-process
run is untouched.
"""
import os
import random
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, List, Mapping, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Sampler

from .errors import UserError
from .tools import set_random_seed


class DistributedSetupError(UserError, RuntimeError):
    """The launcher's environment does not describe a usable process group (the message says what to set)."""


@dataclass(frozen=True)
class LaunchEnv:
    """Where this process sits in the job, as the launcher described it."""

    rank: int
    world_size: int
    local_rank: int
    source: str  # "torchrun" or "SLURM"
    local_world_size: int = 1  # processes on this node (torchrun's LOCAL_WORLD_SIZE; not used under SLURM)


def _int_var(environ: Mapping[str, str], name: str) -> int:
    value = environ[name]
    try:
        return int(value)
    except ValueError:
        raise DistributedSetupError(f"environment variable {name}={value!r} is not an integer") from None


def read_launch_env(environ: Optional[Mapping[str, str]] = None) -> Optional[LaunchEnv]:
    """The process's place in a multi-process job, or None for a single-process run.

    torchrun (single- or multi-node, any rendezvous) sets WORLD_SIZE / RANK / LOCAL_RANK. Under SLURM,
    `srun` sets SLURM_NTASKS / SLURM_PROCID / SLURM_LOCALID, and MASTER_ADDR / MASTER_PORT must name the
    rendezvous host (see docs/DISTRIBUTED.md). Only an srun step counts (SLURM_STEP_ID is set there): the
    batch script itself also has SLURM_PROCID=0 and the allocation's SLURM_NTASKS, and a plain
    `python train.py` (or scripts/sweep.sh) in it stays single-process."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" in environ:
        world_size = _int_var(environ, "WORLD_SIZE")
        if world_size <= 1:
            return None
        for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if name not in environ:
                raise DistributedSetupError(
                    f"WORLD_SIZE={world_size} but {name} is not set; launch with `torchrun --nproc_per_node=N "
                    "train.py ...`, which sets RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT"
                )
        rank = _int_var(environ, "RANK")
        local_rank = _int_var(environ, "LOCAL_RANK") if "LOCAL_RANK" in environ else rank
        local_world_size = _int_var(environ, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in environ else 1
        source = "torchrun"
    elif "SLURM_STEP_ID" in environ and "SLURM_PROCID" in environ and "SLURM_NTASKS" in environ:
        world_size = _int_var(environ, "SLURM_NTASKS")
        if world_size <= 1:
            return None
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in environ]
        if missing:
            raise DistributedSetupError(
                f"SLURM runs {world_size} tasks but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                "not set; export MASTER_ADDR=<first node's hostname> and MASTER_PORT=<free port> in the batch "
                "script before srun (docs/DISTRIBUTED.md has an example)"
            )
        rank = _int_var(environ, "SLURM_PROCID")
        local_rank = _int_var(environ, "SLURM_LOCALID") if "SLURM_LOCALID" in environ else 0
        local_world_size = 1
        source = "SLURM"
    else:
        return None
    if not 0 <= rank < world_size:
        raise DistributedSetupError(f"rank {rank} is outside 0..{world_size - 1} (from {source}'s environment)")
    return LaunchEnv(rank=rank, world_size=world_size, local_rank=local_rank, source=source,
                     local_world_size=local_world_size)


def local_gpu_index(launch: LaunchEnv, device_count: int) -> int:
    """The index, among the GPUs this process sees, of the one it drives. A process that sees a single GPU
    drives it whatever its local rank: SLURM with --gpus-per-task=1 or --gpu-bind gives every task its own
    GPU as device 0, and processes sharing one GPU (CUDA_VISIBLE_DEVICES with one entry) share device 0.
    Otherwise the processes of a node see all of its GPUs and each takes the one of its local rank."""
    if device_count == 1:
        return 0
    if launch.local_rank >= device_count:
        raise DistributedSetupError(
            f"local rank {launch.local_rank} has no GPU: this process sees {device_count} GPUs; start at most that "
            "many processes per node (torchrun --nproc_per_node, or SLURM --ntasks-per-node), or give each task "
            "its own GPU (SLURM --gpus-per-task=1)"
        )
    return launch.local_rank


def shares_one_gpu(launch: LaunchEnv, device_count: int) -> bool:
    """Whether several processes of this node drive the same GPU: torchrun started them all with one visible
    GPU. NCCL refuses two ranks on one device, so such a run sends its CUDA tensors through gloo (fine for
    testing, slow for training)."""
    return device_count == 1 and launch.source == "torchrun" and launch.local_world_size > 1


def init_distributed(use_cuda: bool, environ: Optional[Mapping[str, str]] = None) -> Optional[LaunchEnv]:
    """Join the process group the launcher describes (no-op and None for a single process).

    With CUDA each process drives one GPU (`local_gpu_index`): NCCL carries the CUDA tensors (gradients), gloo
    the CPU ones (data order, evaluation records). Without CUDA everything goes through gloo."""
    launch = read_launch_env(environ)
    if launch is None or is_distributed():
        return launch
    backend = "gloo"
    if use_cuda and torch.cuda.is_available():
        device_count = torch.cuda.device_count()
        torch.cuda.set_device(local_gpu_index(launch, device_count))
        if not shares_one_gpu(launch, device_count):
            backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend, rank=launch.rank, world_size=launch.world_size)
    return launch


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def training_device(use_cuda: bool) -> torch.device:
    """This process's device: its own GPU (set by init_distributed) when distributed, else "cuda" or the CPU."""
    if not (use_cuda and torch.cuda.is_available()):
        return torch.device("cpu")
    if is_distributed():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cuda")


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` of rank `src` on every process (returned unchanged when not distributed)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> List[Any]:
    """Every process's `obj`, in rank order ([obj] when not distributed)."""
    if not is_distributed():
        return [obj]
    gathered: List[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def average_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of `tensor` over the processes (`tensor` itself when not distributed). A NaN or
    inf on any process makes that element non-finite on every process, which is how they agree to stop."""
    if not is_distributed():
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / get_world_size()


def agree_on_seed(seed: int) -> int:
    """The seed every process uses. A negative seed (no fixed seed) becomes one random seed drawn by rank 0,
    because the processes must still pick the same few-shot images and initial prompts."""
    if not is_distributed() or seed >= 0:
        return seed
    return broadcast_object(random.SystemRandom().randrange(2**31) if is_main_process() else None)


def decorrelate_rng() -> None:
    """Give ranks 1.. their own random streams (augmentation, data-loader worker seeds) once everything that
    must agree across processes (dataset, initial prompts) is built. Rank 0 keeps its stream, so it draws
    exactly what a single process would; the data order is rank 0's (see ShardSampler)."""
    rank = get_rank()
    if rank == 0:
        return
    base = int(torch.randint(0, 2**31, (1,)).item())
    set_random_seed((base + 7919 * rank) % 2**31)


# ------------------------------------------------------------------------------------------------------
# Gradients of the trainable parameters


def trainable_parameters(modules: Iterable[nn.Module]) -> List[nn.Parameter]:
    """The parameters that require grad, each once, in module registration order."""
    seen, params = set(), []
    for module in modules:
        for param in module.parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                params.append(param)
    return params


def _average_gradient(param: torch.Tensor) -> None:
    # every rank runs the same graph on an equal share of the batch, so autograd fires these hooks, and with
    # them the collectives, in the same order on every rank
    dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
    param.grad.div_(dist.get_world_size())


def synchronize_trainable_parameters(modules: Iterable[nn.Module]) -> List[nn.Parameter]:
    """Broadcast the trainable parameters from rank 0 and average their gradients across processes after every
    backward (a post-accumulate-grad hook per parameter; the frozen CLIP is never communicated). Returns the
    synchronised parameters. Assumes one backward per optimizer step, as every prompt trainer does: a second
    backward before the step would average the already averaged part again."""
    params = trainable_parameters(modules)
    if not is_distributed():
        return params
    for param in params:
        dist.broadcast(param.data, src=0)
        param.register_post_accumulate_grad_hook(_average_gradient)
    return params


# ------------------------------------------------------------------------------------------------------
# Data


class ShardSampler(Sampler):
    """Rank r's share of the order `base` draws: items r, r+W, r+2W, ... of rank 0's order.

    Every rank draws from `base` (so each consumes its random stream as a single process would) and then
    takes rank 0's order, so shards never overlap. With `global_batch` set, the trailing incomplete global
    batch is dropped first (the single-process loader's drop_last); because the global batch is a multiple of
    W, consecutive per-rank batches of global_batch / W items are the shards of consecutive global batches."""

    def __init__(self, base: Iterable[int], rank: int, world_size: int, global_batch: Optional[int] = None) -> None:
        self.base = base
        self.rank = rank
        self.world_size = world_size
        self.global_batch = global_batch

    def _usable(self, n: int) -> int:
        return n - n % self.global_batch if self.global_batch else n

    def __iter__(self) -> Iterator[int]:
        order = torch.tensor(list(self.base), dtype=torch.int64)
        if is_distributed():
            dist.broadcast(order, src=0)
        order = order[: self._usable(len(order))]
        return iter(order[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        n = self._usable(len(self.base))
        return max(0, (n - self.rank + self.world_size - 1) // self.world_size)


def per_process_batch_size(global_batch: int, world_size: int) -> int:
    """The training batch each process loads; the global batch must split evenly, or the gradient average
    would weight the processes' images unequally."""
    if global_batch % world_size:
        raise DistributedSetupError(
            f"DATALOADER.TRAIN_X.BATCH_SIZE={global_batch} (the global batch) is not divisible by the {world_size} "
            "processes; choose a batch size that is a multiple of the process count"
        )
    return global_batch // world_size


def shard_loader(loader: DataLoader, is_train: bool) -> DataLoader:
    """The DataLoader for this rank's shard of `loader` (which is returned as is when not distributed).

    Training: the loader's batch size is the global batch; each rank loads batch / world_size items per step
    and every rank gets the same number of steps (the gradient all-reduce needs that). Evaluation: each rank
    scores every world_size-th item (no padding, so no item is counted twice) in batches of the same share."""
    if not is_distributed():
        return loader
    world_size, rank = get_world_size(), get_rank()
    n = len(loader.dataset)
    if is_train:
        if n < world_size:
            raise DistributedSetupError(f"the {n} training images cannot be shared among {world_size} processes")
        sampler = ShardSampler(loader.sampler, rank, world_size, loader.batch_size if loader.drop_last else None)
        batch_size = per_process_batch_size(loader.batch_size, world_size)
    else:
        sampler = ShardSampler(loader.sampler, rank, world_size)
        batch_size = -(-loader.batch_size // world_size)
    return DataLoader(
        loader.dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=False,
        worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers,
    )


# ------------------------------------------------------------------------------------------------------
# Evaluation


def evaluate_gathered(evaluator) -> "dict":
    """`evaluator.evaluate()` over what every process recorded: records are gathered, rank 0 evaluates (and
    prints, and saves e.g. a confusion matrix) and every process returns rank 0's results."""
    if not is_distributed():
        return evaluator.evaluate()
    evaluator.gather(all_gather_objects)
    return broadcast_object(evaluator.evaluate() if is_main_process() else None)


def silence_stdout() -> None:
    """Ranks other than 0 print nothing on stdout (stderr keeps warnings and errors)."""
    sys.stdout = open(os.devnull, "w")

