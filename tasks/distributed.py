"""Training beyond one process: the torchrun launcher, the worker entry point and the rank-aware data stream.

`run_meta_init` and `run_finetune` keep one signature whatever the process count. Called in a plain process with
`runtime.nproc_per_node > 1`, they hand over to `launch`, which starts

    python -m torch.distributed.run --standalone --nproc-per-node N -m tasks.distributed <stage> <arg> <root>

and waits for it; each worker (`main` below) joins the process group and calls the same stage function, which then
sees `torch.distributed` initialised and runs its distributed branch. Rank 0 writes every file (checkpoint, curve,
resume snapshot); all ranks read. The parent afterwards logs the curve rank 0 wrote into its tracker, so MLflow shows
the same per-step losses as a single-process run.

How the work is split (the point of this module is that it is explicit):

* Data stream. Every stage reads the one reproducible stream of mini-batches that
  `tasks.preprocess.shards.infinite_batches(dataset, batch_size, seed)` defines (epoch e is `randperm(seed + e)` cut
  into batches). `batches_at` yields the batches at chosen positions of that stream, optionally one rank's slice of
  each, reading only those frames: no rank loads data another rank uses.
* meta_init. `meta.tasks_per_step` (T) is per rank; an outer step averages G = T * world tasks. Step s owns the
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

import argparse
import csv
import hashlib
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from tasks.io import MetadepthError
from tasks.params import Params, load_params

STAGES = ("meta_init", "finetune")
ERROR_MARK = "METADEPTH_ERROR: "  # a worker's MetadepthError, re-raised by the parent as its own one-line error
DUMP_ENV = "METADEPTH_DUMP_RANK_WEIGHTS"  # tests: a folder where every rank saves its final weights
LAUNCHER_ENV = "METADEPTH_LAUNCHER_PID"  # the process that started torchrun; workers stop when it is gone


# ---------------------------------------------------------------------------------------------------------------
# Process group facts


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) in a plain process."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def is_main_rank() -> bool:
    """The one process that writes files and logs: rank 0, or the only process."""
    return rank_and_world()[0] == 0


def needs_launch(params: Params) -> bool:
    """True in a plain process asked for several: the stage must go through torchrun instead of running here."""
    return params.runtime.nproc_per_node > 1 and not is_distributed()


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


def cpu_threads_per_worker(workers: int) -> int:
    """CPU threads each worker may use without oversubscribing the machine (1 per worker on 2 cores, 2 workers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // workers)


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
                             "of runtime.nproc_per_node")
    sampler = _StreamPositions(len(dataset), batch_size, seed, positions, (rank, world))
    return iter(DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                           multiprocessing_context=multiprocessing_context if num_workers else None))


def meta_positions(start_step: int, tasks_per_rank: int, rank: int, world: int, partners: bool) -> Iterator[int]:
    """Stream positions of rank's tasks (then, with `partners`, their partner tasks) for steps start_step, ...

    Step s owns G*m positions from s*G*m (G = tasks_per_rank * world, m = 2 with partners): tasks first, then
    partners, in global task order; rank r's share is tasks r*T .. r*T+T-1 and the partners at the same offsets.
    """
    t = tasks_per_rank
    g = t * world
    per_step = g * (2 if partners else 1)
    for step in itertools.count(start_step):
        first = step * per_step + rank * t
        yield from range(first, first + t)
        if partners:
            yield from range(first + g, first + g + t)


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
                             "tasks/distributed.py); re-run with runtime.nproc_per_node 1 to compare")
    return digests


# ---------------------------------------------------------------------------------------------------------------
# The parent side: launch torchrun, stream its output, take over its result


def log_curve(tracker: Any, curve: Path, names: dict[str, str]) -> None:
    """Log the per-step curve rank 0 wrote (columns renamed by `names`) into the parent's tracker."""
    if not curve.is_file():
        return
    with open(curve, newline="") as f:
        for row in csv.DictReader(f):
            metrics = {names[k]: float(v) for k, v in row.items() if k in names and v not in ("", None)}
            if metrics:
                tracker.log_metrics(metrics, int(float(row["step"])))


def _check_devices(params: Params) -> None:
    n = params.runtime.nproc_per_node
    if not dist.is_available():
        raise MetadepthError(f"runtime.nproc_per_node {n}: this torch build has no torch.distributed; set it to 1")
    wants_cuda = params.runtime.device == "cuda" or (params.runtime.device == "auto" and torch.cuda.is_available())
    if wants_cuda and n > torch.cuda.device_count():
        raise MetadepthError(f"runtime.nproc_per_node {n} exceeds the {torch.cuda.device_count()} visible GPUs; "
                             "lower it (one process per GPU)")


def launch(params: Params, root: Path, stage: str, arg: str, seed: int, tracker: Any, curve: Path,
           metric_names: dict[str, str]) -> dict[str, Any]:
    """Run `stage arg` under torchrun with runtime.nproc_per_node processes; returns rank 0's result.

    The workers get these exact params (as a file), not root/params.yaml, so a caller's in-memory params win.
    Their output is printed line by line as it comes (Prefect's log_prints and DVC logs see it).
    """
    if stage not in STAGES:
        raise MetadepthError(f"stage {stage!r} cannot run under torchrun; only {', '.join(STAGES)} can")
    _check_devices(params)
    n = params.runtime.nproc_per_node
    code_root = str(Path(__file__).resolve().parents[1])  # the checkout holding tasks/, models/
    env = {**os.environ, "PYTHONUNBUFFERED": "1", LAUNCHER_ENV: str(os.getpid()),
           "PYTHONPATH": os.pathsep.join(p for p in (code_root, os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": str(params.runtime.num_threads or cpu_threads_per_worker(n))}
    with tempfile.TemporaryDirectory(prefix="metadepth-torchrun-") as tmp:
        params_file, result_file = Path(tmp) / "params.json", Path(tmp) / "result.json"
        params_file.write_text(json.dumps(params.model_dump(mode="json")))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
               "-m", "tasks.distributed", stage, arg, str(Path(root).resolve()), "--seed", str(seed),
               "--params", str(params_file), "--result", str(result_file)]
        print(f"{stage} {arg}: launching {n} processes with torchrun", flush=True)
        errors: list[str] = []
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                print(line, end="", flush=True)
                if ERROR_MARK in line:
                    errors.append(line.split(ERROR_MARK, 1)[1].strip())
            code = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: torchrun forwards the signal to its workers
                proc.terminate()
                proc.wait()
        if code != 0:
            raise MetadepthError(errors[0] if errors else f"{stage} {arg}: torchrun with {n} processes failed "
                                 f"(exit code {code}); see the worker output above, or set runtime.nproc_per_node 1")
        if not result_file.is_file():
            raise MetadepthError(f"{stage} {arg}: torchrun ended without rank 0's result; see the output above")
        result = json.loads(result_file.read_text())
    log_curve(tracker, curve, metric_names)
    return result


# ---------------------------------------------------------------------------------------------------------------
# The worker side


def init_worker(params: Params) -> torch.device:
    """Join the process group torchrun set up; pin this worker to its GPU or to its share of the CPU cores."""
    from tasks.common import select_device

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(params)  # also applies runtime.num_threads
    backend = params.runtime.dist_backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise MetadepthError("runtime.dist_backend: nccl needs GPUs; use auto or gloo on CPU")
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        dist.init_process_group(backend, device_id=device)
    else:
        if not params.runtime.num_threads:
            torch.set_num_threads(cpu_threads_per_worker(int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        dist.init_process_group(backend)
    return device


def stop_with_launcher(pid: int, every_s: float = 1.0) -> None:
    """Exit this worker soon after the launching process dies.

    A launcher killed with SIGKILL cannot pass the signal on, and the workers would finish (and write) a stage
    nobody waits for, racing the re-run that follows. Whatever they leave is safe to resume from: every file is
    written atomically.
    """

    def watch() -> None:
        while True:
            time.sleep(every_s)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                print(f"rank {rank_and_world()[0]}: the launcher (pid {pid}) is gone; stopping", flush=True)
                os._exit(1)
            except PermissionError:  # exists, owned by someone else: not ours to judge
                pass

    threading.Thread(target=watch, name="stop-with-launcher", daemon=True).start()


def training_device(params: Params) -> torch.device:
    """The device a training stage uses: runtime.device, and under torchrun on GPU this worker's own GPU."""
    from tasks.common import select_device

    device = select_device(params)
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _stage_runner(stage: str) -> Callable[..., dict[str, Any]]:
    if stage == "meta_init":
        from tasks.meta_init import run_meta_init

        return run_meta_init
    from tasks.finetune import run_finetune

    return run_finetune


def main(argv: list[str] | None = None) -> int:
    """Worker entry point (`torchrun ... -m tasks.distributed STAGE ARG ROOT`)."""
    parser = argparse.ArgumentParser(prog="python -m tasks.distributed", description="one torchrun worker")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("arg", help="meta variant or finetune run name")
    parser.add_argument("root", type=Path, help="project root")
    parser.add_argument("--seed", type=int, help="training seed (default the first of params seeds)")
    parser.add_argument("--params", type=Path, help="params file (default ROOT/params.yaml)")
    parser.add_argument("--result", type=Path, help="where rank 0 writes the stage's result as JSON")
    args = parser.parse_args(argv)
    # DDP warns once per rank when a gradient's strides differ from its bucket's; for weights with a size-1
    # dimension (depthwise convolutions) both layouts are the same memory, so the warning is noise here.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    if os.environ.get(LAUNCHER_ENV):
        stop_with_launcher(int(os.environ[LAUNCHER_ENV]))
    try:
        params = load_params(args.params or args.root / "params.yaml")
        init_worker(params)
        try:
            result = _stage_runner(args.stage)(params, args.root, args.arg, seed=args.seed)
            if is_main_rank() and args.result:
                args.result.write_text(json.dumps(result))
        finally:
            dist.destroy_process_group()
    except MetadepthError as err:
        print(f"{ERROR_MARK}{err}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
