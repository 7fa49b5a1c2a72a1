"""Where and how the tensors run, resolved once per stage from params.runtime (nanoGPT's `ctx` idea).

A stage builds one `Runtime` and its loop only says `with rt.autocast():`. Nothing here is consulted per step.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tasks.distributed import rank_and_world
from tasks.io import MetadepthError
from tasks.params import RuntimeParams


def _device(rt: RuntimeParams) -> torch.device:
    wanted = rt.host.device
    if wanted == "cuda" and not torch.cuda.is_available():
        raise MetadepthError("runtime.host.device: cuda requested but no GPU is visible; "
                             "set runtime.host.device to auto or cpu")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(wanted)
    if device.type == "cuda" and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())  # under torchrun: this worker's own GPU
    return device


def trains_on_gpu(rt: RuntimeParams) -> bool:
    """Whether training stages use a GPU: they then take turns on it (the `metadepth-train` slot); on the CPU,
    independent trainings run side by side instead, each on its share of the cores."""
    return rt.host.device == "cuda" or (rt.host.device == "auto" and torch.cuda.is_available())


def share_cpu(rt: RuntimeParams, parallel: int) -> int:
    """Give each of `parallel` stages running side by side in this process its share of the cores (unless
    runtime.host.num_threads says otherwise); returns the torch threads set.

    torch's intra-op pool is per process, so the share is set once for the process. Measured on the 2-core
    machine (benchmarks/cpu_parallel.py, docs/performance.md): two trainings at one thread each finish well
    before the same two one after the other with both threads.
    """
    threads = rt.host.num_threads or cpu_threads_per_worker(parallel)
    torch.set_num_threads(threads)
    return threads


def cpu_threads_per_worker(workers: int) -> int:
    """CPU threads each of `workers` may use without oversubscribing the machine (1 each on 2 cores, 2 workers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(workers, 1))


def _amp_dtype(rt: RuntimeParams, device: torch.device) -> torch.dtype | None:
    """'auto' is bf16 on a GPU that has it and off on CPU, where bf16 kernels are mostly slower than float32.

    bf16 rather than fp16: it keeps float32's exponent range, so no loss scaling is needed and the Reptile deltas
    stay float32 anyway. 'bf16' forces it anywhere (CPU included, which is how the tests exercise it).
    """
    if rt.numerics.amp == "bf16":
        return torch.bfloat16
    if rt.numerics.amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile's default backend (inductor) cannot build kernels for `device` here, or None if it can.

    Without a compiler the failure would come at the first forward, deep inside a training loop, with a long trace.
    """
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is not installed (inductor needs it on the GPU)"
    compilers = [os.environ.get("CXX") or "", "g++", "c++", "clang++"]
    if not any(c and shutil.which(c) for c in compilers):
        return "no C++ compiler (g++/clang++, or $CXX) is on PATH for inductor's CPU kernels"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "Python's C headers (Python.h) are missing, which inductor's CPU kernels need"
    return None


@dataclass(frozen=True)
class Runtime:
    """Device, precision, memory layout, compilation, loader options and the process's place among the ranks."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    memory_format: torch.memory_format = torch.contiguous_format
    compile_mode: str | None = None  # None: eager
    num_workers: int = 0
    rank: int = 0
    world: int = 1

    @classmethod
    def from_params(cls, rt: RuntimeParams) -> Runtime:
        device = _device(rt)
        if rt.host.num_threads:
            torch.set_num_threads(rt.host.num_threads)
        if rt.numerics.compile:
            problem = compile_unavailable(device)
            if problem:
                raise MetadepthError(f"runtime.numerics.compile is true but {problem}; "
                                     "set runtime.numerics.compile: false")
        # channels_last lets cuDNN pick NHWC convolution kernels, which tensor cores prefer ('auto': GPU only).
        nhwc = rt.numerics.channels_last == "on" or (rt.numerics.channels_last == "auto" and device.type == "cuda")
        rank, world = rank_and_world()
        return cls(device=device, amp_dtype=_amp_dtype(rt, device),
                   memory_format=torch.channels_last if nhwc else torch.contiguous_format,
                   compile_mode=rt.numerics.compile_mode if rt.numerics.compile else None,
                   num_workers=rt.host.num_workers,
                   rank=rank, world=world)

    @property
    def main(self) -> bool:
        """The one process that writes files and logs: rank 0, or the only process."""
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """Wrap forward + loss in this (never backward or the optimizer step)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move `model` to the device in the runtime's memory layout (in place); returns it."""
        return model.to(self.device).to(memory_format=self.memory_format)

    def batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A loader batch on the device, image-like (4-D) tensors in the runtime's memory layout."""
        moved = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self.memory_format is torch.contiguous_format:
            return moved
        return {k: v.contiguous(memory_format=self.memory_format) if v.dim() == 4 else v for k, v in moved.items()}

    def compile(self, module: torch.nn.Module) -> torch.nn.Module:
        """`torch.compile(module)` when runtime.numerics.compile is on, else `module`.

        The wrapper shares the module's parameters, so optimizers, Reptile and resume work as before; callers run
        forward through it but save the plain module (the wrapper's keys carry an `_orig_mod.` prefix).
        """
        return module if self.compile_mode is None else torch.compile(module, mode=self.compile_mode)

    @property
    def loader_kwargs(self) -> dict[str, Any]:
        """DataLoader keywords: workers (spawned, see docs/performance.md), pinned memory only for a GPU."""
        workers = self.num_workers
        return {"num_workers": workers, "pin_memory": self.device.type == "cuda",
                "multiprocessing_context": "spawn" if workers else None}
