"""Peak memory of the evaluation fan-out: many checkpoints x datasets through `tasks.evaluate.run_evaluate` in one
process, on a thread pool as the Prefect pipeline runs them (flows/pipeline.py, ThreadPoolTaskRunner).

    python -m benchmarks.eval_fanout                            # 6 checkpoints x 4 datasets, 2 threads, 32x48
    python -m benchmarks.eval_fanout --encoder convnext_atto --size 48 64 --test-size 128

Memory is bounded when the peak of 3N evaluations equals the peak of N (after a warm-up round that pays for
imports, the allocator's arenas and the thread pool): nothing may accumulate per evaluation. Sampled with
tasks.preprocess.memcheck.ChildrenRSS. tests/test_eval_memory.py runs this at tiny sizes.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import ALL_LEVELS
from tasks.layout import Layout
from tasks.params import Params, validate


def make_fixture(root: Path, base: Params, *, models: int, domains: int, test_size: int, height: int, width: int,
                 encoder: str) -> tuple[Params, list[tuple[str, str]]]:
    """A project under `root` with `domains` prepared synthetic datasets and `models` checkpoints (copies of one
    random initialisation: evaluation cost does not depend on the weights). Returns its params and the
    (model, dataset) pairs."""
    from tasks.initialize import run_init
    from tasks.preprocess.prepare import prepare
    from tasks.preprocess.synthetic import DOMAINS

    raw = base.model_dump(mode="json")
    names = sorted(DOMAINS)[:domains]
    raw.update(domains=names, train_domain=names[0])
    raw["data"].update(height=height, width=width, train_size=4, val_size=1, test_size=test_size)
    raw["model"].update(encoder=encoder, **ALL_LEVELS)  # its encoders: stride 32, every level
    raw["evaluate"]["batch_size"] = min(raw["evaluate"]["batch_size"], 8)
    raw["evaluate"]["per_dataset"] = {}
    raw["runtime"]["host"].update(device="cpu", num_workers=0, num_threads=1)
    raw["runtime"]["numerics"]["compile"] = False
    params = validate(raw, "eval_fanout fixture")
    for d in names:
        prepare(params, root, d)
    run_init(params, root, "scratch")
    ck = Layout(root, params.seeds[0]).checkpoints
    model_names = [f"m{i}" for i in range(models)]
    for m in model_names:
        shutil.copy2(ck / "scratch.pt", ck / f"{m}.pt")
    return params, [(m, d) for m in model_names for d in names]


def fan_out(pool: ThreadPoolExecutor, params: Params, root: Path, pairs: list[tuple[str, str]]) -> None:
    """Evaluate every pair on the thread pool, as the pipeline's ThreadPoolTaskRunner does."""
    from tasks.evaluate import run_evaluate

    for future in [pool.submit(run_evaluate, params, root, m, d) for m, d in pairs]:
        future.result()


def measure(params: Params, root: Path, pairs: list[tuple[str, str]], threads: int = 2,
            factor: int = 3) -> dict[str, Any]:
    """Peak RSS of this process while evaluating the pairs once, then `factor` times in a row, after a warm-up.

    One thread pool for all of it, as one pipeline run has: new threads would each bring a fresh malloc arena,
    which shows as growth that is not the evaluations' own.
    """
    from tasks.preprocess.memcheck import ChildrenRSS, rss_mb

    runs: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=threads) as pool:
        fan_out(pool, params, root, pairs)  # warm-up: imports, kernels, allocator arenas
        gc.collect()
        before = rss_mb()
        for name, repeat in (("n", 1), (f"{factor}n", factor)):
            start = time.perf_counter()
            with ChildrenRSS(interval=0.01) as sampler:
                for _ in range(repeat):
                    fan_out(pool, params, root, pairs)
            runs[name] = {"evaluations": repeat * len(pairs), "peak_rss_mb": round(sampler.self_peak, 1),
                          "seconds": round(time.perf_counter() - start, 2)}
    gc.collect()
    return {"evaluations_n": len(pairs), "threads": threads, "rss_before_mb": round(before, 1), **runs,
            "rss_after_mb": round(rss_mb(), 1),
            "peak_growth_mb": round(runs[f"{factor}n"]["peak_rss_mb"] - runs["n"]["peak_rss_mb"], 1)}


def main() -> None:
    import tempfile

    import torch

    from tasks.params import load_params

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--domains", type=int, default=4)
    parser.add_argument("--test-size", type=int, default=16)
    parser.add_argument("--size", type=int, nargs=2, default=[32, 48], metavar=("H", "W"))
    parser.add_argument("--encoder", default="test_convnext")
    parser.add_argument("--threads", type=int, default=2, help="evaluations at once (pipeline: max_parallel)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        params, pairs = make_fixture(Path(tmp), load_params(Path(__file__).resolve().parents[1] / "params.yaml"),
                                     models=args.models, domains=args.domains, test_size=args.test_size,
                                     height=args.size[0], width=args.size[1], encoder=args.encoder)
        result = measure(params, Path(tmp), pairs, args.threads)
    print(json.dumps({"encoder": args.encoder, "resolution": args.size, "test_size": args.test_size, **result}))


if __name__ == "__main__":
    main()
