"""Prepared shards: the one on-disk format every reader writes and every training/evaluation stage reads.

Contract (../shared/DESIGN.md): `data/prepared/<dataset>/<split>.h5` with `rgb` (N,H,W,3) uint8 RGB, `depth` (N,H,W)
float32 planar metres (0 = invalid), optional `intrinsics` (N,4) fx,fy,cx,cy, file attributes, and a `manifest.csv`.
Chunks hold `chunk_frames` frames so a random sample touches one chunk; writing and reading both stream.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from tasks.io import MetadepthError

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ["source_id", "scene", "split", "valid_fraction", "depth_min", "depth_median", "depth_max"]


def write_split(
    path: Path,
    batches: Iterable[dict[str, np.ndarray]],
    n: int,
    attrs: dict[str, Any],
    *,
    split: str,
    chunk_frames: int,
    compression: str,
    min_depth: float,
    max_depth: float,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Stream batches of frames into one shard file; returns the manifest rows.

    Depth outside [min_depth, max_depth] or non-finite is set to 0 so every consumer sees one validity rule.
    """
    comp = None if compression == "none" else compression
    rows: list[dict[str, Any]] = []
    with h5py.File(path, "w") as f:
        rgb = depth = intr = None
        i = 0
        for batch in batches:
            b, h, w = batch["depth"].shape
            if rgb is None:
                rgb = f.create_dataset("rgb", (n, h, w, 3), np.uint8, chunks=(min(chunk_frames, n), h, w, 3),
                                       compression=comp)
                depth = f.create_dataset("depth", (n, h, w), np.float32, chunks=(min(chunk_frames, n), h, w),
                                         compression=comp)
                if "intrinsics" in batch:
                    intr = f.create_dataset("intrinsics", (n, 4), np.float32)
            if i + b > n:
                raise MetadepthError(f"{path}: source yielded more than the expected {n} frames")
            d = batch["depth"].astype(np.float32)
            d = np.where(np.isfinite(d) & (d >= min_depth) & (d <= max_depth), d, 0.0).astype(np.float32)
            rgb[i : i + b] = batch["rgb"]
            depth[i : i + b] = d
            if intr is not None:
                intr[i : i + b] = batch["intrinsics"]
            for j in range(b):
                valid = d[j][d[j] > 0]
                rows.append({
                    "source_id": batch["source_id"][j] if "source_id" in batch else f"{split}/{i + j}",
                    "scene": batch["scene"][j] if "scene" in batch else "",
                    "split": split,
                    "valid_fraction": float(valid.size / d[j].size),
                    "depth_min": float(valid.min()) if valid.size else 0.0,
                    "depth_median": float(np.median(valid)) if valid.size else 0.0,
                    "depth_max": float(valid.max()) if valid.size else 0.0,
                })
            i += b
            if progress is not None:
                progress(b)
        if i != n:
            raise MetadepthError(f"{path}: source yielded {i} frames, expected {n}")
        f.attrs.update({"schema_version": SCHEMA_VERSION, "split": split, "min_depth": min_depth,
                        "max_depth": max_depth, **attrs})
    return rows


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    pd.DataFrame(rows, columns=MANIFEST_COLUMNS).to_csv(path, index=False)


def shard_path(prepared_dir: Path, split: str) -> Path:
    path = prepared_dir / f"{split}.h5"
    if not path.is_file():
        raise MetadepthError(f"{path}: prepared shard not found; run `metadepth stage prepare {prepared_dir.name}`")
    return path


def check_shard(path: Path) -> dict[str, Any]:
    """Open a shard once to fail early with a clear message instead of inside a DataLoader worker."""
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if attrs.get("schema_version") != SCHEMA_VERSION:
                raise MetadepthError(f"{path}: schema_version {attrs.get('schema_version')} != {SCHEMA_VERSION}; "
                                     "re-run the prepare stage")
            for key in ("rgb", "depth"):
                if key not in f:
                    raise MetadepthError(f"{path}: missing dataset '{key}'; re-run the prepare stage")
            attrs["length"] = f["depth"].shape[0]
            attrs["shape"] = tuple(f["depth"].shape[1:])
            attrs["chunk_frames"] = (f["depth"].chunks or f["depth"].shape)[0]
            return attrs
    except OSError as err:
        raise MetadepthError(f"{path}: not a readable HDF5 shard ({err}); re-run the prepare stage") from None


class ShardDataset(Dataset):
    """Random access to one shard, with the HDF5 file and its two datasets kept open per process.

    Why open once: looking up `file["rgb"]` / `file["depth"]` costs more than reading a small frame, so
    reopening (or re-looking-up) per sample made reads several times slower (docs/performance.md, "Data loading").
    Why lazily and per process: an h5py handle must not cross a fork or a pickle (DataLoader workers get a copy of
    this object), so the handles are opened on the first read in each process, dropped by pickling, and reopened
    when a read happens in a process other than the one that opened them. `close()` (or `with`) releases them.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        info = check_shard(self.path)
        self.length = int(info["length"])
        self.attrs = info
        self._file: h5py.File | None = None
        self._rgb: h5py.Dataset | None = None
        self._depth: h5py.Dataset | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.length

    def _datasets(self) -> tuple[h5py.Dataset, h5py.Dataset]:
        if self._file is None or self._pid != os.getpid():
            # A handle inherited through fork belongs to the parent: never use or close it here, just forget it.
            # One frame per chunk (data.chunk_frames 1): a random read never finds its chunk in HDF5's chunk cache,
            # and without the cache the chunk is read straight into the output array (one copy less). Several
            # frames per chunk: h5py's default cache, so neighbours of a frame just read are not decompressed again.
            cache = {"rdcc_nbytes": 0} if self.attrs["chunk_frames"] == 1 else {}
            self._file = h5py.File(self.path, "r", **cache)
            self._rgb, self._depth = self._file["rgb"], self._file["depth"]
            self._pid = os.getpid()
        return self._rgb, self._depth

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rgb_ds, depth_ds = self._datasets()
        rgb = torch.from_numpy(rgb_ds[i]).permute(2, 0, 1).float().div_(255.0)
        depth = torch.from_numpy(depth_ds[i]).unsqueeze(0)
        return {"rgb": rgb, "depth": depth, "index": torch.tensor(i)}

    def close(self) -> None:
        """Close the file if this process opened it (a later read reopens it)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = self._rgb = self._depth = self._pid = None

    def __enter__(self) -> ShardDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_file=None, _rgb=None, _depth=None, _pid=None)
        return state


def infinite_batches(
    dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0, start_batch: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled mini-batches, reproducible from the seed; epoch e uses seed+e so a resume can skip ahead."""
    if len(dataset) < batch_size:
        raise MetadepthError(f"batch size {batch_size} exceeds the {len(dataset)} training frames; lower batch_size")
    per_epoch = len(dataset) // batch_size
    epoch, skip = divmod(start_batch, per_epoch)
    while True:
        g = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(len(dataset), generator=g)[skip * batch_size : per_epoch * batch_size]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, order.tolist()), batch_size=batch_size, shuffle=False,
            num_workers=num_workers, drop_last=True, persistent_workers=False,
        )
        yield from loader
        epoch, skip = epoch + 1, 0
