"""Data parallel training over processes with ``torch.distributed``.

Every process holds the whole model and guide and computes the loss on its own shard of
each minibatch; the trainer then averages the gradients (and the loss) over processes
with ``all_reduce`` before the optimizer step, so all processes apply the same update.
Launch with ``torchrun --nproc_per_node=N script.py``: the trainer initializes the
process group from the environment (gloo on CPU, nccl on CUDA). With ``B`` the batch
size per process, the global batch is ``N * B``; a plate subsampled to the local batch
with ``size`` set to the full data size scales each local loss so that the average over
processes is the global-batch estimate.
"""

from __future__ import annotations

import atexit
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = [
    "init_from_env",
    "is_distributed",
    "rank",
    "world_size",
    "is_main",
    "all_reduce_mean",
    "broadcast_from_main",
    "shutdown",
    "shard_loader",
]


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0: the process that prints and writes checkpoints."""
    return rank() == 0


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group described by ``torchrun``'s environment (``WORLD_SIZE`` > 1).

    Returns whether this process is now part of a multi-process group. The backend is
    nccl when CUDA is available, else gloo, unless given.
    """
    if dist.is_available() and dist.is_initialized():
        return is_distributed()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    sys.excepthook = _flag_failure(sys.excepthook)
    atexit.register(shutdown)
    return is_distributed()


def shutdown() -> None:
    """Leave the process group: wait for the other processes, then destroy it.

    Registered at exit by :func:`init_from_env`. A process that exits while a peer's gloo
    connection is still open can be killed by ``SIGABRT`` as gloo's threads are torn
    down; waiting at a barrier before destroying the group avoids it. A process leaving
    on an uncaught exception skips the barrier (its peers are stopped by ``torchrun``),
    and gloo's barrier gives up after a minute, so an exit never hangs on a peer that
    will not come.

    Example:
        >>> shutdown()  # one process, no group: nothing to leave
        >>> is_distributed()
        False
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if not _FAILED:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=60))
        else:
            dist.barrier()
    dist.destroy_process_group()


_FAILED = False


def _flag_failure(hook):
    def excepthook(kind, value, traceback):
        global _FAILED
        _FAILED = True
        hook(kind, value, traceback)

    return excepthook


def all_reduce_mean(tensors: list[Tensor]) -> None:
    """Replace each tensor by its mean over processes, in place (no-op in one process)."""
    if not is_distributed():
        return
    n = dist.get_world_size()
    for t in tensors:
        dist.all_reduce(t)
        t.div_(n)


def broadcast_from_main(tensors: list[Tensor]) -> None:
    """Overwrite each tensor in place with rank 0's copy (no-op in one process).

    The trainer does this to the parameters at set-up, so that processes whose
    initialization differed (a different data shard, a data-dependent warm start, an
    unseeded draw) still train one model.

    Arguments:
        tensors: Tensors of the same shapes on every process, overwritten in place.

    Example:
        >>> import torch
        >>> weights = torch.ones(2)
        >>> broadcast_from_main([weights])  # one process: nothing to copy
        >>> weights
        tensor([1., 1.])
    """
    if not is_distributed():
        return
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=0)


def shard_loader(
    dataset: Dataset, batch_size: int, *, shuffle: bool = True, seed: int = 0, **kwargs
) -> DataLoader:
    """A loader over this process's shard of ``dataset`` (all of it in one process).

    ``batch_size`` is per process. Shuffling is seeded by ``seed`` and the epoch (the
    trainer calls ``set_epoch``), so a resumed run sees the same batches.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> loader = shard_loader(TensorDataset(torch.arange(10)), batch_size=4, seed=0)
        >>> [len(b[0]) for b in loader]  # one process: the whole data set
        [4, 4, 2]
    """
    if is_distributed():
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=True)
    else:
        sampler = _EpochSampler(dataset, shuffle, seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **kwargs)


class _EpochSampler(torch.utils.data.Sampler[int]):
    """Single-process counterpart of ``DistributedSampler``: a permutation seeded by
    ``seed + epoch``, independent of the global random state."""

    def __init__(self, dataset: Dataset, shuffle: bool, seed: int) -> None:
        self.n, self.shuffle, self.seed, self.epoch = len(dataset), shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n
