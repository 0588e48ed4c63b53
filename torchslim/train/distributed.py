"""Scale-out helpers: process-group setup under `torchrun`, rank checks, and splitting jobs over ranks.

`fit` notices an initialised process group by itself (DistributedDataParallel, a DistributedSampler
giving each rank its share of every global batch, rank-0-only checkpoints). These helpers are for the
code around it: the recipe runner (rank 0 writes files, the others wait) and sensitivity scans
(`map_over_ranks` spreads independent jobs over the ranks and gathers the results in order).

Example (2 CPU processes on this machine):
    torchrun --nproc-per-node 2 -m torchslim.cli.main compress recipes/demo_digits.yaml -o runs/demo
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Callable, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
R = TypeVar("R")


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes checkpoints, models and reports."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def init_from_env(backend: str | None = None, timeout_s: float = 1800) -> bool:
    """Join the process group `torchrun` describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR).

    Uses NCCL when CUDA is available, else gloo; each rank takes GPU `LOCAL_RANK`. Returns False (and
    does nothing) when not launched by torchrun, so single-process code can always call it.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return True


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def default_device() -> torch.device:
    """This rank's device: `cuda:LOCAL_RANK` under a multi-GPU launch, else cuda or cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0)
    return torch.device("cpu")


def map_over_ranks(fn: Callable[[T], R], jobs: Sequence[T]) -> list[R]:
    """`[fn(j) for j in jobs]`, with the jobs split round-robin over the ranks; every rank gets all results.

    For independent, similarly sized jobs such as "prune layer i by ratio r and evaluate" in a
    sensitivity scan. Results must be picklable (numbers, dicts). Without a process group this is a
    plain loop.

    Example:
        >>> scores = map_over_ranks(lambda layer: accuracy_after_pruning(model, layer, 0.5), layer_names)
    """
    jobs = list(jobs)
    if not is_distributed():
        return [fn(j) for j in jobs]
    r, w = rank(), world_size()
    mine = [(i, fn(jobs[i])) for i in range(r, len(jobs), w)]
    gathered: list = [None] * w
    dist.all_gather_object(gathered, mine)
    out: list = [None] * len(jobs)
    for part in gathered:
        for i, value in part:
            out[i] = value
    return out


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (e.g. a decision made from a measurement only rank 0 took)."""
    if not is_distributed():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
