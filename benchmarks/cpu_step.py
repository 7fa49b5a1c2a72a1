"""Two settings of the CPU training step that a params key could switch: torch threads and `torch.compile`.

threads: the fine-tuning step at 1 torch thread vs torch's default (one per core, runtime.host.num_threads 0),
and the default with OMP_WAIT_POLICY=PASSIVE (OpenMP threads sleep instead of spinning while they wait). Each in a
fresh process, in alternating rounds. On a small shared machine more threads can be much slower, not faster.

compile: the same step eager vs `torch.compile(model)` (default mode, inductor), on identical copies of the weights.
Compile time is the first compiled step minus a steady compiled step, measured twice: cold (an empty inductor cache,
what every fresh machine or cache-less CI job pays) and warm (the on-disk cache just filled, what a later stage
process on the same machine pays). It has to be won back within one stage's steps.
"""

from __future__ import annotations

import contextlib
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import BenchConfig, finetune_step, median_times, ratio, run_child, shrink_for_quick
from benchmarks.reptile_overhead import random_batch


def _model_and_batch(cfg: BenchConfig) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    from tasks.checkpoints import build_model

    p = cfg.params
    torch.manual_seed(p.data.seed)
    return build_model(p.model.model_dump()).train(), random_batch(p.finetune.batch_size, p.data.height, p.data.width)


def child_steps(root: Path, quick: bool, threads: int, steps: int) -> dict[str, Any]:
    """Median fine-tuning step time in this (fresh) process at `threads` torch threads (0: torch's default)."""
    from tasks.params import load_params

    params = load_params(root / "params.yaml")
    cfg = BenchConfig(root=root, params=shrink_for_quick(params) if quick else params, quick=quick, threads=threads,
                      workdir=root, timing_root=root)
    if threads:
        torch.set_num_threads(threads)
    model, batch = _model_and_batch(cfg)
    step = finetune_step(cfg.params, model, batch)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"threads": torch.get_num_threads(), "step_ms": round(statistics.median(times[1:]) * 1e3, 1),
            "steps_ms": [round(t * 1e3, 1) for t in times[1:]]}


def bench_threads(cfg: BenchConfig) -> dict[str, Any]:
    """Each setting in its own process, because an OpenMP pool's size and wait policy are fixed once it exists."""
    if cfg.quick:
        return {"skipped": "--quick: each setting needs a fresh process (~10 s of imports here), and a spinning "
                           "thread pool on a busy small CPU takes seconds per step"}
    many = cfg.default_threads
    variants = {"1_thread": (1, {}), f"{many}_threads": (0, {}),
                f"{many}_threads_omp_passive": (0, {"OMP_WAIT_POLICY": "PASSIVE"})}
    steps = 5
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for _ in range(2):  # rounds over the settings, so load changes hit all of them
        for name, (threads, env) in variants.items():
            results[name].append(run_child("benchmarks.cpu_step", str(cfg.root), str(int(cfg.quick)), str(threads),
                                           str(steps), env=env))
    step_ms = {name: round(statistics.median(r["step_ms"] for r in runs), 1) for name, runs in results.items()}
    return {"default_threads": many, "batch_size": cfg.params.finetune.batch_size, "steps_per_process": steps,
            "step_ms": step_ms,
            "speedup_over_1_thread": {name: round(ratio(step_ms["1_thread"], ms), 3) for name, ms in step_ms.items()
                                      if name != "1_thread"},
            "runs": results}


def _first_step_s(step: Callable[[], None]) -> float:
    """Seconds of the first call: for a compiled model, compilation plus one step."""
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def _fresh_inductor_cache(directory: str) -> contextlib.AbstractContextManager | None:
    """An empty inductor cache for the duration, or None where torch's (private) helper is missing."""
    try:
        from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
    except ImportError:
        return None
    return temporary_cache_dir(directory)


def bench_compile(cfg: BenchConfig) -> dict[str, Any]:
    """Eager vs compiled step time and the compile time (cold and warm cache); skipped by --quick."""
    if cfg.quick:
        return {"skipped": "--quick: compiling takes minutes on a small CPU"}
    p = cfg.params
    eager, batch = _model_and_batch(cfg)
    eager_step = finetune_step(p, eager, batch)
    fresh = _fresh_inductor_cache(str(cfg.workdir / "inductor"))
    try:
        with fresh or contextlib.nullcontext():
            cold_step = finetune_step(p, torch.compile(copy.deepcopy(eager)), batch)
            cold_first = _first_step_s(cold_step)
            torch._dynamo.reset()  # forget the compiled graphs in memory; the on-disk cache stays
            compiled_step = finetune_step(p, torch.compile(copy.deepcopy(eager)), batch)
            warm_first = _first_step_s(compiled_step)
            t = median_times({"eager": eager_step, "compiled": compiled_step}, cfg.size(8, 2), warmup=1)
    except Exception as err:  # inductor needs a C++ toolchain; any failure is the answer "not usable here"
        return {"available": False, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
    finally:
        torch._dynamo.reset()
    gain = t["eager"] - t["compiled"]
    return {"available": True, "device": "cpu", "encoder": p.model.encoder, "batch_size": p.finetune.batch_size,
            "resolution": [p.data.height, p.data.width], "eager_step_ms": round(t["eager"] * 1e3, 1),
            "compiled_step_ms": round(t["compiled"] * 1e3, 1),
            "speedup_compiled_over_eager": round(ratio(t["eager"], t["compiled"]), 3),
            "compile_s_cold_cache": round(cold_first - t["compiled"], 1),
            "compile_s_warm_cache": round(warm_first - t["compiled"], 1),
            "cold_cache_isolated": fresh is not None,  # False: "cold" may have hit an existing on-disk cache
            "steps_to_break_even_cold": round((cold_first - t["compiled"]) / gain) if gain > 0 else None,
            "finetune_steps": p.finetune.steps}


if __name__ == "__main__":
    root, quick, threads, steps = sys.argv[1:]
    print(json.dumps(child_steps(Path(root), quick == "1", int(threads), int(steps))))
