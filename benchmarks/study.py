"""One regime of the study in docs/findings.md: the whole DAG for every training seed, the report's claims.

    python -m benchmarks.study NAME [-S key=value ...] [--parallel 2]

runs prepare, init, meta_init, supervised, the fine-tunes, evaluate and report in-process (the stage dispatcher, the
same code `metadepth stage` runs) in a scratch copy of the project under /tmp, with independent trainings side by
side on the CPU (one torch thread each), and writes benchmarks/results/study/NAME.json: the overrides, the wall time,
the machine, the claims on both protocols, the baseline's own-domain accuracy and each held-out domain's
median-scaled delta1. No Prefect, MLflow or DVC: the numbers are the pipeline's, the orchestration is not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _jobs(params) -> dict[tuple[str, ...], list[tuple[str, ...]]]:
    """Stage command -> the commands it waits for (the DAG of dvc.yaml, written out for the in-process run)."""
    jobs: dict[tuple[str, ...], list[tuple[str, ...]]] = {("prepare", d): [] for d in params.domains}
    prepared = list(jobs)
    trained: list[tuple[str, ...]] = []
    for s in map(str, params.seeds):
        inits = {k: ("init", k, s) for k in params.init.kinds}
        jobs.update({c: [] for c in inits.values()})
        start = inits[params.meta.start]
        produced = {k: c for k, c in inits.items()}
        for v in params.meta.variants:
            produced[v] = ("meta_init", v, s)
            jobs[produced[v]] = prepared + [start]
        jobs[("supervised", s)] = prepared + [start]
        produced["sup"] = ("supervised", s)
        for i in params.finetune.starts:
            jobs[("finetune", i, s)] = prepared + [produced[i]]
        trained += [c for c in jobs if c[0] != "prepare"]
    jobs[("evaluate",)] = list(dict.fromkeys(trained + prepared))
    jobs[("report",)] = [("evaluate",)]
    return jobs


def run(name: str, overrides: list[str], parallel: int) -> dict:
    import torch

    from tasks.dispatch import run_stage
    from tasks.param_values import apply_overrides

    work = Path(tempfile.mkdtemp(prefix=f"metadepth-study-{name}-"))
    shutil.copy(ROOT / "params.yaml", work / "params.yaml")
    params = apply_overrides(work / "params.yaml", overrides)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // parallel))
    jobs, done, lock = _jobs(params), set(), threading.Lock()
    started = time.time()
    timings: dict[str, float] = {}

    def one(cmd: tuple[str, ...]) -> tuple[str, ...]:
        t = time.time()
        run_stage(params, work, cmd)
        with lock:
            timings[" ".join(cmd)] = round(time.time() - t, 1)
        print(f"[{time.time() - started:7.1f} s] {' '.join(cmd)} done", flush=True)
        return cmd

    with ThreadPoolExecutor(parallel) as pool:
        running = {}
        while len(done) < len(jobs):
            for cmd, deps in jobs.items():
                if cmd not in done and cmd not in running.values() and all(d in done for d in deps):
                    running[pool.submit(one, cmd)] = cmd
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                done.add(f.result())
                del running[f]
    wall = time.time() - started
    metrics = json.loads((work / "reports" / "metrics.json").read_text())
    detail = json.loads((work / "reports" / "metrics_detail.json").read_text())
    base = params.report.baseline
    median = detail["protocols"].get("median", {}).get("models", {}).get(base, {}).get("columns", {})
    result = {
        "name": name, "overrides": overrides, "seeds": list(params.seeds), "wall_s": round(wall, 1),
        "machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                    "processor": platform.processor(), "load_at_end": os.getloadavg()},
        "claims": metrics["claims"], "in_domain": metrics["in_domain"], "zero_shot": metrics["zero_shot"],
        "baseline_median_a1": {d: c["a1"]["mean"] for d, c in median.items() if d != params.train_domain},
        "stage_seconds": timings, "project": str(work),
    }
    out = ROOT / "benchmarks" / "results" / "study" / f"{name}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("name", "wall_s", "claims", "in_domain", "baseline_median_a1")},
                     indent=1))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("-S", dest="overrides", action="append", default=[], help="params override key=value")
    parser.add_argument("--parallel", type=int, default=2, help="training stages side by side")
    args = parser.parse_args(argv)
    run(args.name, args.overrides, args.parallel)


if __name__ == "__main__":
    sys.exit(main())
