"""Two independent CPU trainings: side by side (two threads of one process, one torch thread each, as
`metadepth run` runs them) against one after the other with every core (what `dvc repro` does).

Each variant trains two models for the same steps from the same weights; the figure is wall time per pair of
trainings and the ratio of the two, measured in alternating rounds in this one process so the machine's load hits
both alike. Run with nothing else on the machine: `python -m benchmarks.cpu_parallel [--steps 40] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import threading
import time
from pathlib import Path

import torch

from benchmarks.common import finetune_step
from benchmarks.reptile_overhead import random_batch
from tasks.checkpoints import build_model
from tasks.params import load_params


def _train(params, model, batch, steps: int) -> None:
    step = finetune_step(params, model, batch)
    for _ in range(steps):
        step()


def one_after_the_other(params, models, batch, steps: int, cores: int) -> float:
    torch.set_num_threads(cores)
    start = time.perf_counter()
    for m in models:
        _train(params, m, batch, steps)
    return time.perf_counter() - start


def side_by_side(params, models, batch, steps: int, cores: int) -> float:
    torch.set_num_threads(max(1, cores // len(models)))
    threads = [threading.Thread(target=_train, args=(params, m, batch, steps)) for m in models]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    cores = len(os.sched_getaffinity(0))
    torch.manual_seed(0)
    base = build_model(params.model.model_dump())
    batch = random_batch(params.finetune.batch_size, params.data.height, params.data.width)
    rows = []
    for _ in range(args.rounds):
        seq = one_after_the_other(params, [copy.deepcopy(base), copy.deepcopy(base)], batch, args.steps, cores)
        par = side_by_side(params, [copy.deepcopy(base), copy.deepcopy(base)], batch, args.steps, cores)
        rows.append({"sequential_s": round(seq, 2), "side_by_side_s": round(par, 2), "speedup": round(seq / par, 3)})
    result = {"cores": cores, "steps": args.steps, "encoder": params.model.encoder,
              "size": [params.data.height, params.data.width], "batch": params.finetune.batch_size, "rounds": rows,
              "median_speedup": sorted(r["speedup"] for r in rows)[len(rows) // 2]}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
