"""Ingestion: a real dataset in its official on-disk format -> prepared shards + manifest (data/prepared/<name>/).

Used by both `metadepth data ingest` and the pipeline's `prepare` stage (for datasets in `data.sources`), so the two
produce identical shards. Frames are read, checked and resized in worker processes (tasks/preprocess/parallel.py)
and streamed to disk; memory does not grow with the number of frames.

Why a staging file per split: shards.write_split needs the frame count up front, but with --skip-bad the count of
good frames is only known after reading them all. Good frames are appended to a small uncompressed HDF5 file at the
training resolution, then streamed from it into the shard. Everything is built inside a temporary directory that
is renamed into place only at the end (tasks.io.atomic_write), so a failure or a kill never leaves a partial shard.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tasks.io import MetadepthError, atomic_write
from tasks.param_values import params_hash
from tasks.params import Params
from tasks.preprocess.parallel import FramePool, Result
from tasks.preprocess.shards import SPLITS, write_manifest, write_split
from tasks.readers import make_reader
from tasks.readers.base import Reader, Sample

QUARANTINE_COLUMNS = ["source_id", "scene", "split", "file", "error"]
STAGING_BATCH = 64  # frames per read from the staging file: bounds memory at the training resolution


def default_workers() -> int:
    """Leave a core for the writer; more than 4 readers rarely helps on one disk."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class _Staging:
    """Append-only HDF5 file of checked frames at the training resolution."""

    def __init__(self, path: Path, height: int, width: int):
        self.path = path
        k = max(1, (1 << 20) // (height * width * 4))  # chunks of <= 1 MiB: they fit HDF5's default chunk cache
        self.file = h5py.File(path, "w")
        self.rgb = self.file.create_dataset("rgb", (0, height, width, 3), np.uint8, maxshape=(None, height, width, 3),
                                            chunks=(k, height, width, 3))
        self.depth = self.file.create_dataset("depth", (0, height, width), np.float32,
                                              maxshape=(None, height, width), chunks=(k, height, width))
        self.intrinsics = self.file.create_dataset("intrinsics", (0, 4), np.float32, maxshape=(None, 4),
                                                   chunks=(256, 4))
        self.has_intrinsics: bool | None = None
        self.ids: list[str] = []
        self.scenes: list[str] = []

    @property
    def n(self) -> int:
        return len(self.ids)

    def add(self, r: Result) -> None:
        has = r.intrinsics is not None
        if self.has_intrinsics is None:
            self.has_intrinsics = has
        elif has != self.has_intrinsics:
            raise MetadepthError(f"{r.sample.file}: intrinsics are known for some frames but not others; set them "
                                 "for the whole dataset in the source options")
        i = self.n
        for ds, value in ((self.rgb, r.rgb), (self.depth, r.depth), (self.intrinsics, r.intrinsics)):
            ds.resize(i + 1, axis=0)
            if value is not None:
                ds[i] = value
        self.ids.append(r.sample.source_id)
        self.scenes.append(r.sample.scene)

    def batches(self) -> Iterator[dict[str, Any]]:
        for start in range(0, self.n, STAGING_BATCH):
            stop = min(start + STAGING_BATCH, self.n)
            batch: dict[str, Any] = {"rgb": self.rgb[start:stop], "depth": self.depth[start:stop],
                                     "source_id": self.ids[start:stop], "scene": self.scenes[start:stop]}
            if self.has_intrinsics:
                batch["intrinsics"] = self.intrinsics[start:stop]
            yield batch

    def close(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


def _split_samples(reader: Reader, samples: list[Sample]) -> dict[str, list[Sample]]:
    by_split = {split: [s for s in samples if s.split == split] for split in SPLITS}
    for split, items in by_split.items():
        if not items:
            counts = ", ".join(f"{k} {len(v)}" for k, v in by_split.items())
            raise MetadepthError(f"{reader.path}: the {split} split is empty ({counts}); every split needs frames: "
                                 "add data or change the split options (val_fraction / test_fraction / split file)")
    return by_split


def _progress(enabled: bool, transient: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=transient)


def ingest(
    reader: Reader,
    out_dir: Path,
    *,
    dataset: str,
    source_label: str,
    height: int,
    width: int,
    min_depth: float,
    max_depth: float,
    chunk_frames: int = 1,
    compression: str = "none",
    workers: int = 0,
    skip_bad: bool = False,
    progress: bool = False,
    transient: bool = False,
) -> dict[str, Any]:
    """Read every frame of `reader`, write train/val/test shards + manifest.csv (+ quarantine.csv) to `out_dir`.

    A bad frame raises MetadepthError (naming its file) and nothing is written, unless `skip_bad`: then it is left out
    and listed in quarantine.csv with its error.
    """
    by_split = _split_samples(reader, reader.samples())
    total = sum(len(v) for v in by_split.values())
    settings = {"format": reader.format, "options": reader.options.model_dump(mode="json"), "height": height,
                "width": width, "min_depth": min_depth, "max_depth": max_depth, "chunk_frames": chunk_frames,
                "compression": compression, "skip_bad": skip_bad}
    attrs = {"dataset": dataset, "source_format": reader.format, "source_path": source_label,
             "params_hash": params_hash(settings), **reader.attrs(height, width)}
    rows: list[dict[str, Any]] = []
    quarantined: list[dict[str, Any]] = []
    frames: dict[str, int] = {}
    with (atomic_write(out_dir) as tmp, _progress(progress, transient) as bar,
          FramePool(reader, height, width, workers) as pool):
        tmp.mkdir(parents=True)
        job = bar.add_task(f"ingest {dataset}", total=total)
        for split in SPLITS:
            stage = _Staging(tmp / f".staging-{split}.h5", height, width)
            try:
                for r in pool.map(by_split[split]):
                    bar.advance(job)
                    if r.error is None:
                        stage.add(r)
                    elif skip_bad:
                        s = r.sample
                        quarantined.append({"source_id": s.source_id, "scene": s.scene, "split": s.split,
                                            "file": s.file, "error": r.error})
                    else:
                        raise MetadepthError(r.error)
                if stage.n == 0:
                    raise MetadepthError(f"{reader.path}: all {len(by_split[split])} frames of the {split} split are "
                                         f"bad, nothing to write; the last error: {quarantined[-1]['error']}")
                rows += write_split(tmp / f"{split}.h5", stage.batches(), stage.n, attrs, split=split,
                                    chunk_frames=chunk_frames, compression=compression, min_depth=min_depth,
                                    max_depth=max_depth)
                frames[split] = stage.n
            finally:
                stage.close()
        write_manifest(tmp / "manifest.csv", rows)
        if quarantined:
            pd.DataFrame(quarantined, columns=QUARANTINE_COLUMNS).to_csv(tmp / "quarantine.csv", index=False)
    return {"dataset": dataset, "format": reader.format, "frames": frames, "quarantined": len(quarantined),
            "path": str(out_dir)}


def prepare_source(params: Params, dataset: str, root: Path, workers: int | None = None) -> dict[str, Any]:
    """The `prepare` stage for a dataset listed in data.sources: read data/raw/<path> with its configured reader."""
    source = params.data.sources[dataset]
    raw = source.raw_path(root)
    label = raw.relative_to(root).as_posix()
    if not raw.exists():
        raise MetadepthError(f"{label}: not found; put the downloaded {source.format} dataset there and track it "
                             f"with `dvc add {label}` (docs/datasets.md)")
    d = params.data
    out = root / "data" / "prepared" / dataset
    summary = ingest(make_reader(source.format, raw, source.options), out, dataset=dataset, source_label=label,
                     height=d.height, width=d.width, min_depth=d.min_depth, max_depth=d.max_depth,
                     chunk_frames=d.chunk_frames, compression=d.compression,
                     workers=default_workers() if workers is None else workers, skip_bad=source.skip_bad,
                     progress=True, transient=True)
    return {**summary, "path": str(out.relative_to(root))}
