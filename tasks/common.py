"""What the training and evaluation stages share: device and seeding policy, checkpoints, the training loss.

Checkpoints follow the contract in ../shared/DESIGN.md: the state dict (BatchNorm buffers included), the model's
parameters so it can be rebuilt without params.yaml, the training step and a content hash of the training data.
They contain only tensors and plain values so they load with `weights_only=True`.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import shutil
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from models.losses import depth_loss
from models.network import DepthNet
from tasks.io import MetadepthError, atomic_write
from tasks.params import LossParams, Params

CHECKPOINT_FORMAT = "metadepth-checkpoint"
CHECKPOINT_VERSION = 1


class Tracker(Protocol):
    """Where stages report progress; MLflow in the flows, a no-op in plain library use.

    A tracker may also have `progress(done: int, total: int)`, called after every training step (the Prefect flows
    use it for a live progress artifact); it is optional so plain library use needs nothing but `log_metrics`.
    """

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


class NullTracker:
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass


def select_device(params: Params) -> torch.device:
    wanted = params.runtime.device
    if wanted == "cuda" and not torch.cuda.is_available():
        raise MetadepthError("runtime.device: cuda requested but no GPU is visible; set runtime.device to auto or cpu")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if params.runtime.num_threads:
        torch.set_num_threads(params.runtime.num_threads)
    return torch.device(wanted)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def paths(root: Path, seed: int | None = None) -> dict[str, Path]:
    """Where stage outputs live; with a training seed, checkpoints/curves/metrics are that seed's `seed<k>/`."""
    data = root / "data"
    run = f"seed{seed}" if seed is not None else ""
    return {"prepared": data / "prepared", "checkpoints": data / "checkpoints" / run, "metrics": data / "metrics" / run,
            "curves": data / "curves" / run, "reports": root / "reports"}


def training_seed(params: Params, seed: int | None) -> int:
    """The run's training seed: one of `seeds` (default the first), so a typo cannot train an unlisted seed."""
    if seed is None:
        return params.seeds[0]
    if seed not in params.seeds:
        raise MetadepthError(f"seed {seed} is not in seeds {params.seeds}; add it to seeds in params.yaml")
    return seed


def build_model(model_params: dict[str, Any], pretrained_path: str | None = None) -> DepthNet:
    """The network from its checkpoint-stored parameters; encoder weights from a local file only at init."""
    p = dict(model_params)
    return DepthNet(encoder=p["encoder"], pretrained_path=pretrained_path,
                    decoder_channels=tuple(p["decoder_channels"]), scales=tuple(p["scales"]),
                    min_depth=p["min_depth"], max_depth=p["max_depth"])


def save_checkpoint(path: Path, model: torch.nn.Module, model_params: dict[str, Any], *, step: int,
                    data_hash: str, info: dict[str, Any] | None = None) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_params": model_params,
        "step": step,
        "data_hash": data_hash,
        "info": info or {},
    }
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MetadepthError(f"{path}: checkpoint not found; run the stage that produces it (see dvc.yaml)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors for the same user problem
        raise MetadepthError(f"{path}: not a loadable checkpoint ({type(err).__name__}); it is corrupt or "
                             "not from metadepth, re-run the stage that produces it") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise MetadepthError(f"{path}: not a metadepth checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    return payload


def model_from_checkpoint(path: Path) -> tuple[DepthNet, dict[str, Any]]:
    payload = load_checkpoint(path)
    model = build_model(payload["model_params"])
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise MetadepthError(f"{path}: weights do not fit the stored model parameters ({str(err)[:200]})") from None
    return model, payload


def loss_fn_for(loss: LossParams) -> Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]:
    """The paper's training loss as `loss_fn(model, batch)`, the signature models.reptile.Reptile expects."""

    def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor], **forward_kwargs: Any) -> torch.Tensor:
        preds = model(batch["rgb"], **forward_kwargs)
        return depth_loss(preds, batch["depth"], smooth_weight=loss.smooth_weight, scale_decay=loss.scale_decay,
                          image=batch["rgb"])

    return loss_fn


def loader_options(params: Params, device: torch.device) -> dict[str, Any]:
    """DataLoader keywords of every stage that reads shards: runtime.num_workers, and pinned host memory on CUDA.

    Pinning lets `to_device(..., non_blocking=True)` overlap the copy with GPU work; on the CPU it would only add
    a copy per batch, so it is on exactly when the batches go to a GPU.
    Workers are spawned, not forked: every stage runs inside a Prefect flow, and a process forked from one exits
    with code 1 (Prefect 3.8's at-exit drain of its logging services asserts in a forked child), which the
    DataLoader reports as a dead worker. Spawned workers start clean; ShardDataset reopens its file in each.
    """
    workers = params.runtime.num_workers
    return {"num_workers": workers, "pin_memory": device.type == "cuda",
            "multiprocessing_context": "spawn" if workers else None}


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def check_finite(value: float, stage: str, step: int, last_good: Path | None) -> None:
    if not math.isfinite(value):
        where = f"; the last good state is {last_good}" if last_good and last_good.exists() else ""
        raise MetadepthError(f"{stage}: loss became {value} at step {step}{where}; lower the learning rate or "
                             "set clip_grad_norm")


def report_progress(stage: str, step: int, total: int, loss: float, every_pct: int = 10,
                    tracker: Any = None) -> None:
    """A plain log line every 10%: rich's bar is invisible in DVC/Prefect logs and CI, these lines are not.

    Every step also goes to the tracker's optional `progress(done, total)` hook (see `Tracker`); throttling is the
    hook's business, so the training loops need not know what is behind it.
    """
    every = max(1, total * every_pct // 100)
    if (step + 1) % every == 0 or step + 1 == total:
        print(f"{stage}: step {step + 1}/{total} ({100 * (step + 1) // total}%), loss {loss:.4f}", flush=True)
    hook = getattr(tracker, "progress", None)
    if hook is not None:
        hook(step + 1, total)


class CurveWriter:
    """Per-step losses as CSV (a DVC plot and the report's loss curve), written atomically at the end."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns, self.rows = path, columns, []

    def add(self, row: dict[str, float]) -> None:
        self.rows.append([row.get(c, "") for c in self.columns])

    def close(self) -> None:
        with atomic_write(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.columns)
            w.writerows(self.rows)


# Mixed precision and memory layout: one policy for both training stages (runtime.amp, runtime.channels_last).


def amp_dtype(params: Params, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full float32.

    'auto' is bf16 on a GPU that has it and off on CPU, where bf16 kernels are mostly slower than float32;
    'bf16' forces it anywhere (CPU included, which is how the tests exercise it). bf16 rather than fp16: it keeps
    float32's exponent range, so no loss scaling is needed and the Reptile deltas stay float32 anyway.
    """
    mode = params.runtime.amp
    if mode == "bf16":
        return torch.bfloat16
    if mode == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def precision_context(params: Params, device: torch.device) -> contextlib.AbstractContextManager:
    """Wrap forward + loss in this (never backward or the optimizer step): autocast per runtime.amp."""
    dtype = amp_dtype(params, device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def memory_format(params: Params, device: torch.device) -> torch.memory_format:
    """channels_last ('auto': on GPU only) lets cuDNN pick NHWC convolution kernels, which tensor cores prefer."""
    mode = params.runtime.channels_last
    on = mode == "on" or (mode == "auto" and device.type == "cuda")
    return torch.channels_last if on else torch.contiguous_format


def apply_memory_format(model: torch.nn.Module, fmt: torch.memory_format) -> torch.nn.Module:
    """Lay out the model's 4-D weights in `fmt` (in place); returns the model."""
    return model.to(memory_format=fmt)


def batch_to(batch: dict[str, torch.Tensor], device: torch.device,
             fmt: torch.memory_format = torch.contiguous_format) -> dict[str, torch.Tensor]:
    """`to_device` plus the memory layout for the 4-D (image-like) tensors of the batch."""
    moved = to_device(batch, device)
    if fmt is torch.contiguous_format:
        return moved
    return {k: v.contiguous(memory_format=fmt) if v.dim() == 4 else v for k, v in moved.items()}


# torch.compile (runtime.compile): applied to the module that runs forward, never to what gets saved.


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile's default backend (inductor) cannot build kernels for `device` here, or None if it can.

    Inductor compiles C++ with the system compiler on the CPU (and needs Python's headers) and uses Triton on
    GPUs. Without them compilation fails at the first forward, deep inside a training loop, with a long trace.
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


def maybe_compile(model: torch.nn.Module, params: Params, device: torch.device) -> torch.nn.Module:
    """`torch.compile(model)` when runtime.compile is true, else `model` itself.

    The compiled wrapper shares the model's parameters and buffers, so optimizers, Reptile and resume snapshots
    work on the model as before. Callers run forward through the returned module but keep saving `model`: the
    wrapper's state_dict keys carry an `_orig_mod.` prefix that an eager model could not load.
    """
    rt = params.runtime
    if not rt.compile:
        return model
    problem = compile_unavailable(device)
    if problem:
        raise MetadepthError(f"runtime.compile is true but {problem}; set runtime.compile: false")
    return torch.compile(model, mode=rt.compile_mode)
