"""Training beyond one process: process-group facts, the rank-aware data stream and the ranks' agreement.

The stage functions run unchanged in one process or in each torchrun worker (tasks/launch.py starts those); they
only ask here which rank they are. Rank 0 writes every file (checkpoint, curve, resume snapshot); all ranks read.

How the work is split (the point of this module is that it is explicit):

* Data stream. Every stage reads the one reproducible stream of mini-batches that
  `tasks.preprocess.shards.infinite_batches(dataset, batch_size, seed)` defines (epoch e is `randperm(seed + e)` cut
  into batches). `batches_at` yields the batches at chosen positions of that stream, optionally one rank's slice of
  each, reading only those frames: no rank loads data another rank uses.
* meta_init. `meta.settings.tasks_per_step` (T) is per rank; an outer step averages G = T * world tasks. Step s owns the
  stream positions [s*G*m, (s+1)*G*m) with m = 2 when task augmentation draws partner tasks: the first G positions
  are the step's tasks, the next G their partners (task j pairs with partner j). Rank r takes tasks
  r*T .. r*T+T-1 and their partners (`meta_positions`). Task j of step s augments with its own generator, seeded
  from (seed, global task index s*G + j). So a 2-rank run with T tasks per rank computes exactly the tasks, pairs
  and augmentation draws of a 1-rank run with 2T tasks per step, and the all-reduced Reptile deltas make it the
  same update.
* finetune. `finetune.batch_size` is the global batch; rank r trains on its slice [r*B/W, (r+1)*B/W) of every
  batch of the stream (B must be divisible by W) and DistributedDataParallel averages the gradients. The data order
  is that of a 1-rank run; augmentation draws are per rank (seeded from seed, step, rank), so only the rank-0 slice
  is augmented like the 1-rank run.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from tasks.io import MetadepthError

DUMP_ENV = "METADEPTH_DUMP_RANK_WEIGHTS"  # tests: a folder where every rank saves its final weights


# ---------------------------------------------------------------------------------------------------------------
# Process group facts


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) in a plain process."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def mean_across_ranks(value: torch.Tensor) -> float:
    """The mean of a scalar over ranks (the global loss of a DDP step), as a float; the value itself alone."""
    if not is_distributed():
        return value.item()
    buf = value.detach().float().reshape(1).clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return (buf / dist.get_world_size()).item()


# ---------------------------------------------------------------------------------------------------------------
# Random streams and the data stream


def stream_seed(*key: int) -> int:
    """A 64-bit seed for an independent random stream named by integers (seed, step, task index, rank...).

    numpy's SeedSequence hashes the key, so nearby keys give unrelated streams (unlike seed + index).
    """
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, np.uint64)[0])


def task_generator(seed: int, task_index: int) -> torch.Generator:
    """The random stream of one meta-learning task: a function of its global index only, not of the rank."""
    return torch.Generator().manual_seed(stream_seed(seed, task_index))


class _StreamPositions:
    """A DataLoader batch_sampler: the sample indices of the stream batches at `positions` (see module docstring)."""

    def __init__(self, n: int, batch_size: int, seed: int, positions: Iterable[int], part: tuple[int, int]):
        self.n, self.batch_size, self.seed, self.positions = n, batch_size, seed, positions
        rank, world = part
        share = batch_size // world
        self.lo, self.hi = rank * share, (rank + 1) * share

    def __iter__(self) -> Iterator[list[int]]:
        per_epoch = self.n // self.batch_size
        epoch_cached, order = -1, torch.empty(0, dtype=torch.long)
        for position in self.positions:
            epoch, k = divmod(position, per_epoch)
            if epoch != epoch_cached:  # the same permutation infinite_batches draws for this epoch
                order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
                epoch_cached = epoch
            batch = order[k * self.batch_size : (k + 1) * self.batch_size]
            yield batch[self.lo : self.hi].tolist()


def batches_at(dataset: Dataset, batch_size: int, seed: int, positions: Iterable[int], *,
               part: tuple[int, int] = (0, 1), num_workers: int = 0, pin_memory: bool = False,
               multiprocessing_context: str | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """The batches at `positions` of the stream `infinite_batches(dataset, batch_size, seed)` yields.

    `part=(rank, world)` keeps rank's 1/world slice of each batch. With positions 0, 1, 2, ... and part (0, 1) this
    is `infinite_batches` itself (tests/test_distributed.py checks it), so a 1-process run reads what it always did.
    """
    rank, world = part
    if len(dataset) < batch_size:
        raise MetadepthError(f"batch size {batch_size} exceeds the {len(dataset)} training frames; lower batch_size")
    if batch_size % world:
        raise MetadepthError(f"batch size {batch_size} cannot be split over {world} processes; make it a multiple "
                             "of runtime.numerics.nproc_per_node")
    sampler = _StreamPositions(len(dataset), batch_size, seed, positions, (rank, world))
    return iter(DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                           multiprocessing_context=multiprocessing_context if num_workers else None))


def meta_positions(start_step: int, tasks_per_rank: int, rank: int, world: int, partners: bool,
                   batches_per_task: int = 1) -> Iterator[int]:
    """Stream positions of rank's tasks (then, with `partners`, their partner tasks) for steps start_step, ...

    Step s owns G*(k+p) positions from s*G*(k+p) (G = tasks_per_rank * world, k = batches_per_task, p = 1 with
    partners): the tasks' batches first (task j: k consecutive positions), then one partner per task, in global
    task order; rank r's share is tasks r*T .. r*T+T-1 and the partners at the same offsets.
    """
    t, k = tasks_per_rank, batches_per_task
    g = t * world
    per_step = g * (k + (1 if partners else 0))
    for step in itertools.count(start_step):
        first = step * per_step + rank * t * k
        yield from range(first, first + t * k)
        if partners:
            partner = step * per_step + g * k + rank * t
            yield from range(partner, partner + t)


# ---------------------------------------------------------------------------------------------------------------
# Consistency of the ranks


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer, bit for bit."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_ranks_agree(model: torch.nn.Module, what: str) -> list[str]:
    """Fail unless every rank holds bit-identical weights; returns the per-rank digests ([] in a plain process).

    DDP and the all-reduced Reptile update keep the ranks in lockstep by construction; this costs one small
    collective at the end of a stage and turns a silent divergence (a rank that drew other data, a
    non-deterministic kernel) into an error instead of a checkpoint that only rank 0's history explains.
    """
    if not is_distributed():
        return []
    rank, world = rank_and_world()
    dump = os.environ.get(DUMP_ENV)
    if dump:
        Path(dump).mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                   Path(dump) / f"{what.replace(' ', '_')}.rank{rank}.pt")
    digests: list[Any] = [None] * world
    dist.all_gather_object(digests, weights_digest(model))
    if len(set(digests)) != 1:
        raise MetadepthError(f"{what}: the {world} ranks ended with different weights; a rank diverged (see "
                             "tasks/distributed.py); re-run with runtime.numerics.nproc_per_node 1 to compare")
    return digests
