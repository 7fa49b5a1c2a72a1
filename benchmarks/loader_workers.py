"""How many DataLoader workers (runtime.host.num_workers) does the shard loader need? Side by side in one process.

    python -m benchmarks.loader_workers                        # params.yaml's size, workers 0 1 2
    python -m benchmarks.loader_workers --size 256 320 --frames 256 --batches 30

The training stages' loader (ShardDataset + tasks.distributed.batches_at, built per pull as a stage builds it, so
worker start-up is included) with each worker count, in alternating rounds (best of --rounds), against the
samples/s params.yaml's fine-tuning step consumes (benchmarks/loader.py's `step_rate`, on the CPU here). Workers pay
when loading is a real share of a step; with headroom >> 1 at 0 workers they only add processes and memory.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def compare(height: int, width: int, frames: int, batches: int, workers: list[int], rounds: int) -> dict[str, Any]:
    """Loader samples/s per worker count and the fine-tuning step's samples/s at the same size."""
    import torch

    from benchmarks.loader import loader_rate, step_rate, write_shard
    from tasks.distributed import batches_at
    from tasks.params import load_params, validate
    from tasks.preprocess import synthetic
    from tasks.preprocess.shards import ShardDataset

    torch.set_num_threads(1)
    raw = load_params(ROOT / "params.yaml").model_dump(mode="json")
    raw["data"].update(height=height, width=width)
    params = validate(raw, "loader_workers")
    bs = params.finetune.batch_size
    gen = list(synthetic.generate("loft", frames, params.data.seed, height, width, 64))
    data = {k: np.concatenate([b[k] for b in gen]) for k in ("rgb", "depth", "intrinsics")}
    rates: dict[int, list[float]] = {w: [] for w in workers}
    with tempfile.TemporaryDirectory() as tmp:
        dataset = ShardDataset(write_shard(Path(tmp) / "train.h5", data, params))
        for _ in range(rounds):
            for w in workers:
                rates[w].append(loader_rate(
                    lambda w=w: batches_at(dataset, bs, params.data.seed, itertools.count(), num_workers=w),
                    batches, bs))
        batch = next(batches_at(dataset, bs, params.data.seed, itertools.count()))
        dataset.close()
    step_sps, _ = step_rate(params, {"rgb": batch["rgb"], "depth": batch["depth"]}, 3)
    best = {w: max(r) for w, r in rates.items()}
    return {"resolution": [height, width], "encoder": params.model.encoder, "batch_size": bs,
            "compression": params.data.compression, "batches_per_pull": batches, "rounds": rounds,
            "step_samples_per_s": round(step_sps, 1),
            "loader_samples_per_s": {str(w): round(v, 1) for w, v in best.items()},
            "vs_workers_0": {str(w): round(v / best[workers[0]], 2) for w, v in best.items()},
            "headroom_loader_over_step": {str(w): round(v / step_sps, 1) for w, v in best.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--frames", type=int, default=512)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from tasks.params import load_params

    d = load_params(ROOT / "params.yaml").data
    h, w = args.size or (d.height, d.width)
    print(json.dumps(compare(h, w, args.frames, args.batches, args.workers, args.rounds)))


if __name__ == "__main__":
    main()
