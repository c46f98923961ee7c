"""Which process of a Lightning DDP run this is, and the few collectives the pipeline needs.

Under ``trainer=ddp`` every rank runs ``run.py``'s whole ``main``: Lightning's launcher starts
the other ranks at the first ``Trainer`` call, as fresh ``python run.py …`` processes (or Slurm
starts them), and they replay the stages before it deterministically. What the pipeline does
outside the Trainer therefore runs on every rank; only rank 0 may write (baseline cache, record,
checkpoint, W&B). The process group Lightning created is used as is, once it exists.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank: the process group's once Lightning has made one, else what
    the launcher put in the environment (torchrun's ``RANK``, Slurm's ``SLURM_PROCID`` in a
    multi-task job, Lightning's ``LOCAL_RANK``/``NODE_RANK``), else 0. From the last pair
    alone the global rank is unknown (it needs the devices per node): it is 0 exactly for
    local rank 0 on node 0, and some positive number otherwise."""
    if initialized():
        return dist.get_rank()
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"])
    local, node = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("NODE_RANK", 0))
    return 0 if local == node == 0 else max(1, local)


def is_rank_zero() -> bool:
    """True in the one process that writes (the only one when not distributed)."""
    return rank() == 0


def gather(obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order (``[obj]`` when not distributed)."""
    if not initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if initialized():
        dist.barrier()


def broadcast_state(model: nn.Module) -> None:
    """Give every rank rank 0's weights and buffers, in place (no-op when not distributed).

    DDP keeps parameters equal, but each rank's last forward pass updates its own BatchNorm
    statistics (without ``sync_batchnorm``); after a stage, rank 0's model is the one it caches
    and records, so every rank continues from exactly that one."""
    if not initialized():
        return
    device = (
        torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    )
    for tensor in model.state_dict().values():
        moved = tensor.to(device) if device is not None else tensor
        dist.broadcast(moved, src=0)
        if moved is not tensor:
            tensor.copy_(moved)
