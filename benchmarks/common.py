"""What every `metadepth bench` section shares: the configuration, timing, fixture frames.

Memory sampling is `tasks.preprocess.memcheck` (rss_mb, peak_rss_mb, ChildrenRSS): one sampler for the project.

Why medians of alternating repeats: this project is developed on a shared 2-core VM where a single timing can be
off by 10x. Each section measures the things it compares side by side, in the same process and interleaved where
possible, so the ratios it reports survive the noise even when the absolute rates do not.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.params import Params, validate

# The model keys for a stride-32 encoder with all its levels (test_convnext, convnext_*), whatever params.yaml keeps.
ALL_LEVELS: dict[str, Any] = {"encoder_levels": None, "decoder_channels": [16, 32, 64, 128, 256]}
# --quick: sizes small enough for a test (the whole bench in seconds), through the same code paths.
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "data": {"height": 32, "width": 48},
    "model": {"encoder": "test_convnext", **ALL_LEVELS},
    "finetune": {"batch_size": 4},
    "meta": {"settings": {"batch_size": 4}},
    "evaluate": {"batch_size": 8},
}
FIXTURE_BYTES = 256 * 2**20


@dataclass
class BenchConfig:
    """One bench run: the (possibly shrunk) params, the sizes to use and a scratch folder for fixtures."""

    root: Path
    params: Params
    quick: bool
    threads: int
    workdir: Path
    timing_root: Path
    default_threads: int = 1  # torch's own default thread count, before the bench set --threads
    _frames: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    @property
    def domain(self) -> str:
        """A synthetic domain to render fixtures from: the training domain when it is synthetic."""
        from tasks.preprocess.synthetic import DOMAINS

        d = self.params.train_domain
        return d if d in DOMAINS else sorted(DOMAINS)[0]

    def frames(self) -> dict[str, np.ndarray]:
        """Synthetic frames at the params resolution, rendered once and shared by the sections that need data."""
        if self._frames is None:
            from tasks.preprocess import synthetic

            d = self.params.data
            # A sample of the training set is enough to time it: at most 768 frames and ~256 MB (the paper profile's
            # 20000 frames at 256x320 would take longer to render than everything else together).
            n = self.size(min(d.train_size, 768, max(64, FIXTURE_BYTES // (d.height * d.width * 7))), 32)
            batches = list(synthetic.generate(self.domain, n, self.params.data.seed, d.height, d.width,
                                              self.params.runtime.host.render_batch))
            self._frames = {k: np.concatenate([b[k] for b in batches]) for k in ("rgb", "depth", "intrinsics")}
        return self._frames


def bench_device(params: Params) -> Any:
    """The device the training stages would use (runtime.host.device), falling back to the CPU instead of failing."""
    import torch

    return torch.device("cuda" if params.runtime.host.device != "cpu" and torch.cuda.is_available() else "cpu")


def finetune_step(params: Params, model: Any, batch: dict[str, Any], device: Any = None) -> Callable[[], None]:
    """One step of tasks/finetune.py's loop as a closure, with the same per-step work and the same policies.

    Moving the (CPU) batch to the device, online augmentation, autocast (runtime.numerics.amp) and memory layout
    (runtime.numerics.channels_last), loss, backward, clipping and Adam: on the CPU defaults the policies are no-ops.
    """
    import dataclasses

    import torch

    from tasks.runtime import Runtime
    from tasks.training import augment_fn, loss_fn_for

    rt = Runtime.from_params(params.runtime)
    if device is not None:
        rt = dataclasses.replace(rt, device=device)
    ft = params.finetune.settings
    rt.place(model).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=ft.lr, weight_decay=ft.weight_decay)
    loss_fn, augment = loss_fn_for(params.loss), augment_fn(params.augment)
    g = torch.Generator().manual_seed(params.data.seed)

    def step() -> None:
        b = rt.batch(batch)
        if ft.online_augment:
            b = augment(b, g)
        with rt.autocast():
            loss = loss_fn(model, b)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if ft.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), ft.clip_grad_norm)
        optimizer.step()

    return step


def shrink_for_quick(params: Params) -> Params:
    """params.yaml with QUICK_OVERRIDES applied and validated like any override."""
    raw = params.model_dump(mode="json")
    for section, values in QUICK_OVERRIDES.items():
        raw[section] = {**raw[section], **{k: {**raw[section][k], **v} if isinstance(v, dict) else v
                                           for k, v in values.items()}}
    return validate(raw, "params.yaml with --quick sizes")


def timed(fn: Callable[[], Any]) -> float:
    """Seconds of one call (CUDA synchronised, so GPU work is inside the interval)."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def median_times(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved so machine drift hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def ratio(a: float, b: float) -> float:
    """a / b, NaN instead of an exception when b is not positive (a broken measurement shows, not crashes)."""
    return float(a / b) if b > 0 else float("nan")


def run_child(module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> dict[str, Any]:
    """Run `python -m module args...` in a fresh process (with `env` added) and return the JSON it prints last.

    A fresh process per measurement is the only way to get a peak memory that belongs to that measurement alone,
    or a torch thread pool set up differently from this process's.
    """
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def loadavg() -> list[float] | None:
    """1, 5 and 15 minute load averages: on a shared machine they say how much the numbers can be trusted."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
