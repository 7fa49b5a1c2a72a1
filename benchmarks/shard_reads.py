"""ShardDataset random reads before and after a change, side by side in one process, for each compression.

    python -m benchmarks.shard_reads --before 579c7c3          # ShardDataset of that commit vs this checkout's
    python -m benchmarks.shard_reads --before 579c7c3 --size 256 320 --frames 128

The old class is loaded from `git show REV:tasks/preprocess/shards.py`, so both read the same files in alternating
rounds (best of --rounds): on a shared machine only ratios measured like this are worth recording. Also reports
each compression's bytes/frame, to weigh a layout's size against its read speed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def old_dataset_class(rev: str) -> type:
    """ShardDataset as it was at git revision `rev` (its module loaded under another name)."""
    source = subprocess.run(["git", "show", f"{rev}:tasks/preprocess/shards.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "shards_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("shards_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ShardDataset


def compare(rev: str, height: int, width: int, frames: int, rounds: int, compressions: list[str]) -> dict[str, Any]:
    """Samples/s of random reads through the old and new ShardDataset on shards written with each compression."""
    import torch

    from benchmarks.loader import write_shard
    from tasks.params import load_params
    from tasks.preprocess import synthetic
    from tasks.preprocess.shards import ShardDataset

    torch.set_num_threads(1)
    params = load_params(ROOT / "params.yaml")
    batches = list(synthetic.generate("loft", frames, params.data.seed, height, width, 64))
    data = {k: np.concatenate([b[k] for b in batches]) for k in ("rgb", "depth", "intrinsics")}
    order = np.random.default_rng(params.data.seed).permutation(frames).tolist()
    classes = {"before": old_dataset_class(rev), "after": ShardDataset}
    rates: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        shards = {c: write_shard(Path(tmp) / f"{c}.h5", data, params, compression=c, chunk_frames=1)
                  for c in compressions}
        for _ in range(rounds):  # rounds over every variant, so load changes hit all of them alike
            for c in compressions:
                for name, cls in classes.items():
                    dataset = cls(shards[c])  # a fresh object: the first read opens the file, as in a worker
                    start = time.perf_counter()
                    for i in order:
                        dataset[i]
                    rates.setdefault((c, name), []).append(frames / (time.perf_counter() - start))
        sizes = {c: shards[c].stat().st_size for c in compressions}
    best = {k: max(v) for k, v in rates.items()}
    rows = [{"compression": c, "bytes_per_frame": round(sizes[c] / frames),
             "size_vs_none": round(sizes[c] / sizes["none"], 3) if "none" in sizes else None,
             "reads_per_s_before": round(best[(c, "before")]), "reads_per_s_after": round(best[(c, "after")]),
             "after_over_before": round(best[(c, "after")] / best[(c, "before")], 2),
             "after_vs_none_after": round(best[(c, "after")] / best[("none", "after")], 2) if "none" in sizes
             else None} for c in compressions]
    return {"before": rev, "resolution": [height, width], "frames": frames, "rounds": rounds, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision whose ShardDataset is the baseline")
    parser.add_argument("--size", type=int, nargs=2, default=[48, 64], metavar=("H", "W"))
    parser.add_argument("--frames", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compression", nargs="+", default=["none", "lzf", "gzip"])
    args = parser.parse_args()
    result = compare(args.before, *args.size, args.frames, args.rounds, args.compression)
    for row in result["rows"]:
        print(json.dumps(row))
    json.dump(result, sys.stderr)


if __name__ == "__main__":
    main()
