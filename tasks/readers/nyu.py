"""NYU Depth v2, labeled subset: `nyu_depth_v2_labeled.mat` (MATLAB v7.3, i.e. HDF5) + the official `splits.mat`.

MATLAB stores arrays column-major, so h5py sees every axis reversed: the MATLAB `images` (480, 640, 3, 1449) reads
as (1449, 3, 640, 480) = (N, C, W, H), and `depths` (480, 640, 1449) as (1449, 640, 480) = (N, W, H). Each frame
is therefore transposed back to (H, W, C). Depth is already in metres (projected and in-painted by the dataset's
toolbox), the colour is RGB.

Official split: 795 train / 654 test frames, from `splits.mat` (`trainNdxs`, `testNdxs`, 1-based). That file is an
old-style v5 .mat; it is read with scipy.io.loadmat when scipy is importable, with h5py when it was re-saved as v7.3,
and a CSV (`index,split`, 1-based) is accepted as a fallback. Validation frames are drawn from the official train
list with a fixed seed (`val_fraction`), so the official test set stays untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
from pydantic import Field

from tasks.io import MetadepthError
from tasks.readers.base import Frame, Reader, Sample, SplitOptions, assign_splits, reading
from tasks.readers.geometry import map_box

NYU_INTRINSICS = (518.8579, 519.4696, 325.5824, 253.7362)  # fx, fy, cx, cy at 640x480 (the toolbox's RGB camera)
NYU_SIZE = (480, 640)  # height, width
EIGEN_CROP = (45, 471, 41, 601)  # rows 45:471, cols 41:601 at 480x640 (Eigen et al. 2014 evaluation crop)
MATLAB_HINT = "expected the labeled NYUv2 file nyu_depth_v2_labeled.mat (MATLAB v7.3)"


class NyuOptions(SplitOptions):
    mat_file: str = "nyu_depth_v2_labeled.mat"  # inside the source folder (or give the .mat itself as the path)
    splits_file: str | None = "splits.mat"  # beside the .mat; null = seeded random split by frame
    val_fraction: float = Field(0.05, ge=0, lt=1)  # taken from the official train list
    test_fraction: float = Field(0.45, ge=0, lt=1)  # only without a splits file (654/1449 in the official split)


class NyuReader(Reader):
    format = "nyuv2"
    Options = NyuOptions

    def __init__(self, path: Path | str, options: dict[str, Any] | None = None):
        super().__init__(path, options)
        self.folder = self.path.parent if self.path.is_file() else self.path
        self.mat = self.path if self.path.is_file() else self.path / self.options.mat_file
        self._file: h5py.File | None = None

    def _open(self) -> h5py.File:
        if self._file is None:
            if not self.mat.is_file():
                raise MetadepthError(f"{self.mat}: not found; {MATLAB_HINT} (set options.mat_file if it is named "
                                     "differently)")
            if not h5py.is_hdf5(self.mat):
                raise MetadepthError(f"{self.mat}: not a MATLAB v7.3 (HDF5) file; it is truncated, corrupt or an "
                                     f"older .mat version: {MATLAB_HINT}")
            with reading(self.mat, "the .mat file"):
                self._file = h5py.File(self.mat, "r")
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def samples(self) -> list[Sample]:
        f = self._open()
        for key in ("images", "depths"):
            if key not in f or not isinstance(f[key], h5py.Dataset):
                raise MetadepthError(f"{self.mat}: no '{key}' dataset (keys: {', '.join(sorted(f.keys()))}); "
                                     f"{MATLAB_HINT}")
        images, depths = f["images"], f["depths"]
        h, w = NYU_SIZE
        if images.ndim != 4 or images.shape[1:] != (3, w, h):
            raise MetadepthError(f"{self.mat}: 'images' has shape {images.shape}; expected (N, 3, {w}, {h}) as h5py "
                                 f"reads MATLAB's (H, W, 3, N); {MATLAB_HINT}")
        if depths.ndim != 3 or depths.shape[1:] != (w, h):
            raise MetadepthError(f"{self.mat}: 'depths' has shape {depths.shape}; expected (N, {w}, {h}); "
                                 f"{MATLAB_HINT}")
        if images.dtype != np.uint8:
            raise MetadepthError(f"{self.mat}: 'images' has dtype {images.dtype}; expected uint8")
        if not np.issubdtype(depths.dtype, np.floating):
            raise MetadepthError(f"{self.mat}: 'depths' has dtype {depths.dtype}; expected floating-point metres")
        n = images.shape[0]
        if depths.shape[0] != n:
            raise MetadepthError(f"{self.mat}: {n} images but {depths.shape[0]} depth maps; the counts must match")
        scenes = _scene_names(f, n)
        splits = self._splits(n)
        self.close()
        return [Sample(source_id=f"{i + 1:04d}", scene=scenes[i], split=splits[i], file=f"{self.mat}[{i + 1}]",
                       ref=i) for i in sorted(splits)]

    def _splits(self, n: int) -> dict[int, str]:
        o = self.options
        if o.splits_file is None:
            return {int(k): v for k, v in assign_splits([str(i) for i in range(n)], o.val_fraction, o.test_fraction,
                                                        o.seed).items()}
        path = self.folder / o.splits_file
        if not path.is_file():
            raise MetadepthError(f"{path}: official split file not found; download splits.mat beside the .mat, or "
                                 "set options.splits_file: null for a seeded random split")
        lists = read_nyu_splits(path, n)
        train = [str(i) for i in lists["train"]]
        val = {int(k) for k, v in assign_splits(train, o.val_fraction, 0.0, o.seed).items() if v == "val"}
        out = {i: ("val" if i in val else "train") for i in lists["train"]}
        out.update({i: "test" for i in lists["test"]})
        return out

    def load(self, sample: Sample) -> Frame:
        i = int(sample.ref)
        with reading(sample.file, "frame"):
            f = self._open()
            rgb = np.ascontiguousarray(f["images"][i].transpose(2, 1, 0))  # (C, W, H) -> (H, W, C)
            depth = np.ascontiguousarray(f["depths"][i].T).astype(np.float32)  # (W, H) -> (H, W)
        return Frame(rgb=rgb, depth=depth, intrinsics=np.array(NYU_INTRINSICS, dtype=np.float32))

    def attrs(self, height: int, width: int) -> dict[str, Any]:
        return {"camera": "nyuv2_kinect", "eval_crop": "eigen",
                "eigen_crop": map_box(EIGEN_CROP, NYU_SIZE, height, width),  # top, bottom, left, right
                "eigen_crop_native": list(EIGEN_CROP)}


def _scene_names(f: h5py.File, n: int) -> list[str]:
    """`scenes` is a MATLAB cell array of strings: h5py sees (1, N) object references to uint16 character arrays.
    Scene names only label the manifest, so a file without them still ingests."""
    if "scenes" not in f:
        return [""] * n
    try:
        refs = np.asarray(f["scenes"]).reshape(-1)
        names = ["".join(chr(c) for c in np.asarray(f[r]).reshape(-1)) for r in refs]
    except (OSError, KeyError, ValueError, TypeError):
        return [""] * n
    return names if len(names) == n else [""] * n


def read_nyu_splits(path: Path, n: int) -> dict[str, list[int]]:
    """0-based train and test frame indices from splits.mat (v5 via scipy, v7.3 via h5py) or a CSV fallback."""
    with reading(path, "the split file"):
        if path.suffix.lower() in (".csv", ".txt"):
            import pandas as pd  # imported here: worker processes never read splits, so they skip its import cost

            table = pd.read_csv(path)
            if not {"index", "split"} <= set(table.columns):
                raise MetadepthError(f"{path}: expected CSV columns 'index,split' (1-based index, split train/test)")
            raw = {k: table.loc[table["split"] == k, "index"].to_numpy() for k in ("train", "test")}
        elif h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                raw = {k: np.asarray(f[key]) for k, key in (("train", "trainNdxs"), ("test", "testNdxs")) if key in f}
        else:
            try:
                from scipy.io import loadmat
            except ImportError:
                raise MetadepthError(f"{path}: a MATLAB v5 .mat needs scipy to read; install scipy, or give the "
                                     "split as a CSV with columns index,split (options.splits_file)") from None
            mat = loadmat(path)
            raw = {k: np.asarray(mat[key]) for k, key in (("train", "trainNdxs"), ("test", "testNdxs")) if key in mat}
    for k, key in (("train", "trainNdxs"), ("test", "testNdxs")):
        if k not in raw:
            raise MetadepthError(f"{path}: no '{key}' in the split file; expected the official NYUv2 splits.mat")
    out: dict[str, list[int]] = {}
    for k, values in raw.items():
        flat = np.asarray(values, dtype=np.float64).reshape(-1)  # (n, 1) from loadmat, (1, n) from h5py
        if flat.size == 0 or not np.all(np.mod(flat, 1) == 0) or flat.min() < 1 or flat.max() > n:
            raise MetadepthError(f"{path}: {k} indices must be whole numbers in 1..{n} (MATLAB 1-based)")
        out[k] = sorted(int(i) - 1 for i in flat)
    if set(out["train"]) & set(out["test"]):
        raise MetadepthError(f"{path}: {len(set(out['train']) & set(out['test']))} frames are in both train and test")
    return out
