"""`metadepth data inspect`: what a prepared dataset holds, and a picture of it to eyeball.

The picture is the quickest check that a reader got a new copy of a dataset right: swapped colour channels, a
transposed or flipped image, or a wrong depth scale are obvious in a grid of RGB next to colour-mapped depth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np
import pandas as pd

from tasks.io import MetadepthError, atomic_write
from tasks.preprocess.shards import SPLITS, check_shard, shard_path


def summarize(prepared: Path) -> dict[str, Any]:
    """Counts per split, resolution, attributes and depth statistics (from manifest.csv, no pixel reads)."""
    if not prepared.is_dir():
        raise MetadepthError(f"{prepared}: not found; ingest it first (`metadepth data ingest ...`)")
    info: dict[str, Any] = {"name": prepared.name, "splits": {}}
    for split in SPLITS:
        attrs = check_shard(shard_path(prepared, split))
        info["splits"][split] = int(attrs["length"])
        info["resolution"] = attrs["shape"]
        info["source_format"] = str(attrs.get("source_format", ""))
        info["has_intrinsics"] = info.get("has_intrinsics", True) and _has_intrinsics(prepared / f"{split}.h5")
    manifest = pd.read_csv(prepared / "manifest.csv")
    valid = manifest[manifest["valid_fraction"] > 0]
    info["depth"] = {
        "valid_fraction_mean": float(manifest["valid_fraction"].mean()),
        "min": float(valid["depth_min"].min()) if len(valid) else 0.0,
        "median_of_medians": float(valid["depth_median"].median()) if len(valid) else 0.0,
        "max": float(valid["depth_max"].max()) if len(valid) else 0.0,
        "frames_without_valid_depth": int((manifest["valid_fraction"] == 0).sum()),
    }
    info["scenes"] = int(manifest["scene"].fillna("").nunique())
    quarantine = prepared / "quarantine.csv"
    info["quarantined"] = len(pd.read_csv(quarantine)) if quarantine.is_file() else 0
    return info


def _has_intrinsics(path: Path) -> bool:
    with h5py.File(path, "r") as f:
        return "intrinsics" in f


def colorize_depth(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Depth -> RGB with the turbo colour map (near = blue, far = red), invalid pixels black."""
    scaled = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
    bgr = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    rgb[depth <= 0] = 0
    return rgb


def sample_grid(prepared: Path, out_png: Path, samples: int = 8, columns: int = 4) -> Path:
    """A PNG of `samples` test frames spread evenly over the split: each cell is RGB | depth."""
    with h5py.File(shard_path(prepared, "test"), "r") as f:
        n = f["depth"].shape[0]
        idx = np.unique(np.linspace(0, n - 1, min(samples, n)).round().astype(int))
        rgbs = [f["rgb"][i] for i in idx]
        depths = [f["depth"][i] for i in idx]
    valid = np.concatenate([d[d > 0] for d in depths])
    lo, hi = (np.percentile(valid, [2, 98]) if valid.size else (0.0, 1.0))
    cells = [np.concatenate([rgb, colorize_depth(d, lo, hi)], axis=1) for rgb, d in zip(rgbs, depths, strict=True)]
    blank = np.zeros_like(cells[0])
    cells += [blank] * (-len(cells) % columns)
    rows = [np.concatenate(cells[i : i + columns], axis=1) for i in range(0, len(cells), columns)]
    grid = np.concatenate(rows, axis=0)
    with atomic_write(out_png) as tmp:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        if not ok:
            raise MetadepthError(f"{out_png}: could not encode the sample grid")
        tmp.write_bytes(buf.tobytes())
    return out_png
