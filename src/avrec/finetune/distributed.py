"""Process-group helpers: torchrun's environment, joining the group, rank-zero checks, memory peaks."""

from __future__ import annotations

import atexit
import os

import torch


def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment (0, 1, 0 otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def init_distributed() -> tuple[int, int, torch.device]:
    """Join the torchrun process group when there is one; returns (rank, world_size, device)."""
    import torch.distributed as dist

    rank, world, local = dist_info()
    if torch.cuda.is_available():
        device = torch.device("cuda", local if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        # leave the group before the interpreter tears down: exiting with gloo's threads still running
        # aborts a rank now and then ("terminate called without an active exception")
        atexit.register(_leave_group)
    return rank, world, device


def _leave_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rank_zero() -> bool:
    """True in the process that writes outputs (the only one without torchrun)."""
    return dist_info()[0] == 0
