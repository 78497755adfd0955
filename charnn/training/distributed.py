"""Data-parallel training on torch.distributed, for runs launched by torchrun.

    torchrun --nproc-per-node 2 -m charnn train corpus.txt

Every process (rank) holds the whole model. The B streams of a window are split into W equal
blocks of rows, one block per rank, and each rank carries its own rows' hidden states exactly as
a single process would. DistributedDataParallel averages the gradients, which is the gradient of
the mean loss over all B rows: W ranks with B/W rows each take the same steps as one process
with B rows. Only rank 0 reports progress and writes files.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
from torch import distributed as dist

from charnn.errors import CharnnError, SettingError

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a process on its own: the one that talks to the user."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among the processes training one model."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # index on this machine: picks the GPU

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's block of the B stream rows."""
        if batch_size % self.world_size:
            raise SettingError(
                f"batch size {batch_size} cannot be split evenly across {self.world_size} "
                f"processes: use a {{batch_size}} that is a multiple of {self.world_size}"
            )
        share = batch_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def on_main(self, work: Callable[[], T]) -> T:
        """Run `work` on rank 0 alone and hand its result, or its error, to every rank."""
        if not self.active:
            return work()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", work())
            except SettingError as err:  # its template, so each rank names settings alike
                box[0] = ("setting", err.template)
            except CharnnError as err:
                box[0] = ("error", str(err))
        dist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "setting":
            raise SettingError(value)
        if kind == "error":
            raise CharnnError(value)
        return cast(T, value)

    def all_reduce(self, values: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Combine `values` across ranks (in place; returned for chaining)."""
        if self.active:
            dist.all_reduce(values, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return values

    def agreed_clock(self, elapsed: float, stop: bool) -> tuple[float, bool]:
        """The latest clock and any rank's stop request, the same on every rank, so that all
        stop together."""
        if not self.active:
            return elapsed, stop
        agreed = self.all_reduce(torch.tensor([elapsed, float(stop)]), op="max")
        return float(agreed[0]), bool(agreed[1])

    def mean_loss(self, loss: torch.Tensor) -> float:
        """The loss over all B rows, when each rank holds the mean over its own rows."""
        if not self.active:
            return loss.item()
        total = self.all_reduce(loss.detach().reshape(1).double().cpu())
        return float(total[0]) / self.world_size

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Stack every rank's rows (dimension 1 of a (layers, rows, hidden) state) in rank order."""
        if not self.active:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=1)


@contextmanager
def process_group(device: torch.device) -> Iterator[tuple[Ranks, torch.device]]:
    """Join the torchrun job this process belongs to, if any, and leave it cleanly.

    Yields this process's place and its device (cuda:LOCAL_RANK on GPUs). A process group that a
    caller set up already is used and left alive; one set up here is torn down here: a gloo
    group still alive at interpreter exit aborts the process.
    """
    if not launched_by_torchrun():
        yield Ranks(), device
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    ranks = Ranks(dist.get_rank(), dist.get_world_size(), local_rank)
    failed = False
    try:
        yield ranks, device
    except BaseException:
        failed = True  # the other ranks may never reach a barrier: torchrun stops them
        raise
    finally:
        if owned:
            # a DistributedDataParallel wrapper lives in reference cycles: freed later, by the
            # garbage collector at exit, it would touch a destroyed group and abort the process
            gc.collect()
            if not failed:
                dist.barrier()  # let every rank finish its last collective before tearing down
            dist.destroy_process_group()
