"""torchrun / DDP helpers: the same script runs as one process or as N.

``torchrun --nproc_per_node N -m argen train ...`` sets RANK, WORLD_SIZE and
LOCAL_RANK; ``init()`` reads them and joins the process group (gloo on CPU,
nccl on CUDA). Without them everything here is a no-op for a single process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun; returns the device this rank should use."""
    if "RANK" not in os.environ or is_dist():
        return device
    backend = "nccl" if device.type == "cuda" else "gloo"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return device


def barrier() -> None:
    if is_dist():
        dist.barrier()


def shutdown() -> None:
    if is_dist():
        dist.destroy_process_group()


def mean(x: torch.Tensor) -> torch.Tensor:
    """``x`` averaged over ranks (a new tensor; every rank must call it)."""
    if not is_dist():
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / world_size()


def all_true(flag: bool) -> bool:
    """``flag`` and-ed over every rank (so that a decision to stop is the same everywhere)."""
    if not is_dist():
        return flag
    t = torch.tensor([float(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())
