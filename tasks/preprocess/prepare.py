"""The prepare stage: one dataset in, prepared shards + manifest out (data/prepared/<dataset>/).

Synthetic domains are rendered here; real datasets go through the readers registered in this package. Either way the
whole dataset directory is built under a temporary name and renamed into place, so a killed run leaves no partial
shard behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.progress import Progress

from tasks.io import MetadepthError, atomic_write
from tasks.param_values import params_hash, subset
from tasks.params import Params
from tasks.preprocess import synthetic
from tasks.preprocess.shards import SPLITS, write_manifest, write_split
from tasks.stages import STAGES


def split_seed(seed: int, split: str) -> int:
    """Independent, stable seeds per split: seed 0's test split must never equal seed 1's train split."""
    return int(hashlib.sha256(f"{seed}/{split}".encode()).hexdigest()[:8], 16)


def _with_ids(batches: Iterator[dict[str, Any]], prefix: str) -> Iterator[dict[str, Any]]:
    """Give every frame a stable source id and a scene label, for the manifest."""
    start = 0
    for b in batches:
        n = len(b["scene"])
        yield {**b, "scene": [f"{prefix}/scene{s}" for s in b["scene"]],
               "source_id": [f"{prefix}/{start + i}" for i in range(n)]}
        start += n


def prepare(params: Params, root: Path, dataset: str) -> dict[str, Any]:
    if dataset not in params.domains:
        raise MetadepthError(f"dataset {dataset!r} is not in domains {params.domains}")
    if dataset in params.data.sources:  # a real dataset under data/raw/, read by its configured reader
        from tasks.preprocess.ingest import prepare_source

        return prepare_source(params, dataset, root)
    if dataset not in synthetic.DOMAINS:
        raise MetadepthError(f"dataset {dataset!r}: no reader configured; synthetic domains are "
                             f"{sorted(synthetic.DOMAINS)}, real ones need an entry in data.sources")
    d = params.data
    sizes = {"train": d.train_size, "val": d.val_size, "test": d.test_size}
    attrs = {"dataset": dataset, "source_format": "synthetic",
             "params_hash": params_hash(subset(params, STAGES["prepare"].params))}  # what the shards depend on
    out_dir = root / "data" / "prepared" / dataset
    rows: list[dict[str, Any]] = []
    with atomic_write(out_dir) as tmp, Progress(transient=True) as bar:
        tmp.mkdir(parents=True)
        job = bar.add_task(f"prepare {dataset}", total=sum(sizes.values()))
        for split in SPLITS:
            scenes = d.train_scenes if split == "train" else None
            batches = synthetic.generate(dataset, sizes[split], split_seed(params.data.seed, split), d.height, d.width,
                                         batch_size=params.runtime.host.render_batch, scenes=scenes)
            batches = _with_ids(batches, f"{dataset}/{split}")
            rows += write_split(tmp / f"{split}.h5", batches, sizes[split], attrs, split=split,
                                chunk_frames=d.chunk_frames, compression=d.compression, min_depth=d.min_depth,
                                max_depth=d.max_depth, progress=lambda k: bar.advance(job, k))
        write_manifest(tmp / "manifest.csv", rows)
    return {"dataset": dataset, "frames": sizes, "path": str(out_dir.relative_to(root))}
