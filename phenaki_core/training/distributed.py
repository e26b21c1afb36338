"""Multi-process training on torch.distributed (launched with ``torchrun``), and the data order.

Launch any ``phenaki train`` command under torchrun and it runs data-parallel:

    torchrun --standalone --nproc_per_node 4 -m phenaki_core.cli train transformer runs/t2v ...

The CLI calls :func:`init_distributed` whenever torchrun started it (one process included): NCCL
on GPUs, gloo on the CPU. The trainer then wraps the trained module in ``DistributedDataParallel`` and
only rank 0 logs, previews and writes checkpoints.

Data order and randomness do not depend on the number of processes
------------------------------------------------------------------------
A training step consumes one *global batch* of ``batch_size`` items, cut into
``world_size * grad_accum`` equal micro-batches ("slots"). Slot ``k = micro * world_size + rank``
of step ``s`` reads the dataset *positions* ``s * batch_size + k * micro + i``, and its random
draws (masks, CFG dropout, critic samples) come from a ``torch.Generator`` seeded by ``(seed, s, k)``.
So two processes with one micro-batch each compute what one process computes with
``grad_accum=2``: the same items, the same random draws, the same averaged gradient up to float
rounding (the all-reduce may sum in another order than the local accumulation, so weights can
differ in the last bits; the tests allow 2e-5). A run may resume with another number of
processes; nothing but the step count is needed to continue.

A position maps to a dataset index through a fresh permutation per epoch
(:class:`EpochOrder`), so within an epoch no item is read twice.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from ..errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job (``world_size == 1``: a plain single-process run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    in_group: bool = False  # joined a process group (torchrun), even one of a single process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.in_group or self.world_size > 1


def current_context() -> DistContext:
    """The context of an initialised process group, or the single-process default."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), True)
    return DistContext()


def launched_by_torchrun() -> bool:
    """Started by torchrun, with any number of processes (it sets TORCHELASTIC_RUN_ID for each).

    A one-process torchrun joins a process group too, so the job runs the same DDP and collective
    code on one GPU as on eight (and checks the NCCL set-up where only one GPU is at hand)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_type: str) -> DistContext:
    """Join the process group torchrun set up (env:// rendezvous): NCCL for CUDA, gloo otherwise."""
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run a single process")
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
        logger.info("joined process group: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return current_context()


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def mean_across(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Average a (small) tensor over all processes; identity in a single process."""
    if not ctx.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / ctx.world_size


def micro_batch_size(batch_size: int, grad_accum: int, ctx: DistContext) -> int:
    slots = grad_accum * ctx.world_size
    if batch_size % slots:
        raise ConfigError(f"batch_size {batch_size} must divide evenly into grad_accum ({grad_accum}) x "
                          f"processes ({ctx.world_size}) = {slots} micro-batches; change --batch-size or "
                          f"--grad-accum")
    return batch_size // slots


def slot_generator(seed: int, step: int, slot: int, device: torch.device) -> torch.Generator:
    """The random stream of one micro-batch slot of one step (independent of the process count)."""
    state = np.random.SeedSequence([seed, step, slot]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))


class EpochOrder(Dataset):
    """Reads a finite dataset by *position*: position p is item ``perm_e[p % n]`` of epoch
    ``e = p // n``, with a fresh permutation per epoch (seeded by ``(seed, e)``). Datasets with
    a ``set_epoch`` method (random clip offsets) are told the epoch before each read."""

    def __init__(self, dataset: Dataset, seed: int = 0, shuffle: bool = True):
        self.dataset, self.seed, self.shuffle = dataset, seed, shuffle
        self.size = len(dataset)  # type: ignore[arg-type]
        self._cached: Optional[tuple[int, np.ndarray]] = None
        if self.size == 0:
            raise ConfigError("the training dataset is empty")

    def __len__(self) -> int:
        return 2**62

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:  # positions are read in order: one epoch at a time
            self._cached = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.size))
        return self._cached[1]

    def index(self, position: int) -> tuple[int, int]:
        epoch, offset = divmod(position, self.size)
        return epoch, int(self._permutation(epoch)[offset]) if self.shuffle else offset

    def __getitem__(self, position: int):
        epoch, index = self.index(position)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


class StepSampler(Sampler[int]):
    """The dataset positions this process reads from ``start_step`` to ``total_steps``, micro-batch
    after micro-batch (see the module docstring for the layout)."""

    def __init__(self, start_step: int, total_steps: int, batch_size: int, grad_accum: int, ctx: DistContext):
        self.start, self.total = start_step, total_steps
        self.batch_size, self.grad_accum, self.ctx = batch_size, grad_accum, ctx
        self.micro = micro_batch_size(batch_size, grad_accum, ctx)

    def __len__(self) -> int:
        return max(0, self.total - self.start) * self.grad_accum * self.micro

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start, self.total):
            for micro in range(self.grad_accum):
                slot = micro * self.ctx.world_size + self.ctx.rank
                first = step * self.batch_size + slot * self.micro
                yield from range(first, first + self.micro)


__all__ = ["DistContext", "EpochOrder", "StepSampler", "barrier", "current_context", "init_distributed",
           "launched_by_torchrun", "mean_across", "micro_batch_size", "shutdown_distributed", "slot_generator"]
