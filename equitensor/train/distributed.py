"""torch.distributed for training: process-group setup from torchrun's environment, the shard of
each global batch a rank computes, and sums across ranks.

A run launched by ``torchrun --nproc_per_node=N equitensor train ...`` sees WORLD_SIZE > 1 and
joins the group with ``init_method="env://"`` (gloo on CPU, nccl on CUDA). Every rank draws the
same global batches (same seed) and computes the structures ``batch[rank::world_size]``; losses
are normalised by the global batch's counts, so the gradient DDP averages is the gradient of
the one-process loss on the global batch. Metrics are reduced as sums of errors and counts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from equitensor.errors import InputError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: rank, world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum over ranks (the tensor itself on one process)."""
        if self.distributed:
            tensor = tensor.clone()
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available (one GPU per local rank), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def init_distributed(device_name: str = "auto") -> DistributedContext:
    """Join torchrun's process group when WORLD_SIZE > 1; otherwise a one-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown_distributed(context: DistributedContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


class ShardedBatches:
    """The shard ``batch[rank::world_size]`` of every global batch from ``batch_sampler``.

    Iterating yields (global batch, this rank's indices); a shard may be empty when a global batch
    holds fewer structures than there are ranks (the rank still takes part in the step).
    """

    def __init__(self, batch_sampler, rank: int = 0, world_size: int = 1) -> None:
        self.batch_sampler = batch_sampler
        self.rank = rank
        self.world_size = world_size

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[list[int], list[int]]]:
        for batch in self.batch_sampler:
            yield list(batch), list(batch)[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self.batch_sampler)


def shard(indices: Sequence[int], context: DistributedContext) -> list[int]:
    """This rank's share of a list of indices (round robin)."""
    return list(indices)[context.rank :: context.world_size]
