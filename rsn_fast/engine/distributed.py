"""Process-group set-up and tear-down, rank helpers and object gathering for torchrun jobs.

Works for ``python script.py`` (one process, no process group), ``torchrun --nproc_per_node N`` (one node) and
multi-node torchrun (rendezvous through the environment torchrun sets: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).
NCCL is used when the processes drive GPUs, gloo otherwise.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_INFO = DistInfo()


def get_info() -> DistInfo:
    """The :class:`DistInfo` set by :func:`init_distributed` (rank 0 of 1 on CPU before that)."""
    return _INFO


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the torchrun job (if any) and pick this process's device.

    Args:
        device: "auto" (cuda:LOCAL_RANK when CUDA is available, else cpu), "cpu" or "cuda".
        timeout_s: collective timeout.
    """
    global _INFO
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(seconds=timeout_s)}
        if use_cuda:
            kwargs["device_id"] = dev  # binds NCCL to this GPU and lets barrier() know the device
        # After a torchrun restart the agent's store still holds the previous attempt's keys (peer addresses of
        # dead processes); a peer reading one before it is overwritten fails to connect (seen with gloo). A
        # per-attempt key prefix keeps attempts apart.
        store, rank, world_size = next(dist.rendezvous("env://", rank=rank, world_size=world_size))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"rsn_fast/attempt_{attempt}/", store)
        dist.init_process_group(store=store, rank=rank, world_size=world_size, **kwargs)
        rank, world_size = dist.get_rank(), dist.get_world_size()
    _INFO = DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)
    return _INFO


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over all processes (a no-op for one process). Returns a new tensor."""
    t = t.detach().clone()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's ``obj`` as a list on rank ``dst`` (index = rank), None on the other ranks."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    rank = dist.get_rank()
    out: list[Any] | None = [None] * dist.get_world_size() if rank == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` as a list (index = rank) on every rank."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    """Leave the process group in order: a barrier so no rank tears down while others still talk, then destroy."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def clean_exit(code: int = 0) -> None:
    """Flush and leave the process without running interpreter teardown.

    gloo's background threads can abort (SIGABRT) while the interpreter finalises after a finished run; the
    process group is destroyed before this is called, so skipping the finalisers loses nothing but that crash.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed stream must not turn a clean exit into a crash
            pass
    os._exit(code)
