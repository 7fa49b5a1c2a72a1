"""Hypersim (Roberts et al., ICCV 2021) as downloaded: one folder per scene, HDF5 files per frame.

    <scene>/images/scene_cam_XX_final_hdf5/frame.NNNN.color.hdf5               "dataset": (H, W, 3) HDR linear RGB
    <scene>/images/scene_cam_XX_geometry_hdf5/frame.NNNN.depth_meters.hdf5     "dataset": (H, W) distance to the
                                                                                camera centre in metres, NaN = sky
    <scene>/images/scene_cam_XX_geometry_hdf5/frame.NNNN.render_entity_id.hdf5 (optional) -1 = no surface

Two conversions make it comparable with the other datasets:
- Colour is tone-mapped to sRGB uint8 exactly as the dataset's own `scene_generate_images_tonemap.py` does: scale so
  the 90th percentile of brightness (0.3 R + 0.59 G + 0.11 B) over valid pixels becomes 0.8 after gamma 1/2.2.
- `depth_meters` is a Euclidean distance, not the planar z every other dataset (and the shards) use; it is divided by
  sqrt(1 + ((u-cx)/f)^2 + ((v-cy)/f)^2) with f = W / 2 / tan(fov_x / 2) (fov_x = 60 degrees: 886.81 px at 1024 wide)
  and pixel centres at integer coordinates, cx = (W - 1) / 2. NaN distance becomes 0 (invalid).
A minority of scenes use non-standard (tilt-shift) cameras listed in ml-hypersim's metadata_camera_parameters.csv;
this reader assumes the standard pinhole for all of them.

The official split (`metadata_images_split_scene_v1.csv`) assigns each public frame to train/val/test by scene; frames
not `included_in_public_release` are left out. Only scenes present on disk are read, so a partial download works.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from pydantic import Field

from tasks.io import MetadepthError
from tasks.readers.base import Frame, Reader, Sample, SplitOptions, assign_splits, reading
from tasks.readers.geometry import focal_from_fov, radial_to_planar

COLOR_GLOB = "*/images/scene_cam_*_final_hdf5/frame.*.color.hdf5"
COLOR_RE = re.compile(r"^scene_cam_(?P<cam>\d+)_final_hdf5/frame\.(?P<frame>\d+)\.color\.hdf5$")
SPLIT_COLUMNS = ["scene_name", "camera_name", "frame_id", "included_in_public_release", "split_partition_name"]


class HypersimOptions(SplitOptions):
    split_csv: str | None = "metadata_images_split_scene_v1.csv"  # relative to the source folder; null = by scene
    fov_x_deg: float = Field(60.0, gt=0, lt=180)  # Hypersim's standard horizontal field of view


class HypersimReader(Reader):
    format = "hypersim"
    Options = HypersimOptions

    def samples(self) -> list[Sample]:
        frames = []
        for color in sorted(self.path.glob(COLOR_GLOB)):
            m = COLOR_RE.match(f"{color.parent.name}/{color.name}")
            if m:
                frames.append((color.parents[2].name, f"cam_{m['cam']}", int(m["frame"]), color))
        if not frames:
            raise MetadepthError(f"{self.path}: no Hypersim frames found; expected "
                                 "<scene>/images/scene_cam_XX_final_hdf5/frame.NNNN.color.hdf5 under it")
        splits = self._splits(frames)
        out = []
        for scene, cam, frame, color in frames:
            split = splits.get((scene, cam, frame))
            if split is None:
                continue
            geometry = color.parents[1] / color.parent.name.replace("_final_hdf5", "_geometry_hdf5")
            stem = f"frame.{frame:04d}"
            ref = (str(color), str(geometry / f"{stem}.depth_meters.hdf5"),
                   str(geometry / f"{stem}.render_entity_id.hdf5"))
            out.append(Sample(source_id=f"{scene}/{cam}/{frame:04d}", scene=scene, split=split, file=str(color),
                              ref=ref))
        if not out:
            raise MetadepthError(f"{self.path}: none of the {len(frames)} frames on disk is in the public train/val/"
                                 f"test split of {self.options.split_csv}; check that the CSV matches the scenes")
        return out

    def _splits(self, frames: list[tuple[str, str, int, Path]]) -> dict[tuple[str, str, int], str]:
        o = self.options
        if o.split_csv is None:
            by_scene = assign_splits([f[0] for f in frames], o.val_fraction, o.test_fraction, o.seed)
            return {(s, c, i): by_scene[s] for s, c, i, _ in frames}
        path = self.path / o.split_csv
        if not path.is_file():
            raise MetadepthError(f"{path}: official split CSV not found; download {o.split_csv} from ml-hypersim "
                                 "(evermotion_dataset/analysis) into the source folder, or set options.split_csv: null")
        import pandas as pd  # imported here: worker processes never list samples, so they skip pandas' import cost

        with reading(path, "the split CSV"):
            table = pd.read_csv(path)
        missing = [c for c in SPLIT_COLUMNS if c not in table.columns]
        if missing:
            raise MetadepthError(f"{path}: missing columns {missing}; expected the official "
                                 "metadata_images_split_scene_v1.csv")
        public = table["included_in_public_release"].astype(str).str.lower() == "true"
        table = table[public & table["split_partition_name"].isin(["train", "val", "test"])]
        return {(str(s), str(c), int(i)): str(p) for s, c, i, p in
                zip(table["scene_name"], table["camera_name"], table["frame_id"], table["split_partition_name"],
                    strict=True)}

    def load(self, sample: Sample) -> Frame:
        color_path, depth_path, entity_path = sample.ref
        if not Path(depth_path).is_file():
            raise MetadepthError(f"{color_path}: no depth file {depth_path}; every colour frame needs its "
                                 "depth_meters.hdf5 (download the geometry_hdf5 files of this camera)")
        hdr = _dataset(color_path, "colour")
        distance = _dataset(depth_path, "depth")
        if hdr.ndim != 3 or hdr.shape[2] != 3:
            raise MetadepthError(f"{color_path}: colour has shape {hdr.shape}; expected (H, W, 3)")
        if distance.shape != hdr.shape[:2]:
            raise MetadepthError(f"{depth_path}: depth has shape {distance.shape}; expected {hdr.shape[:2]} like "
                                 "its colour frame")
        if not np.issubdtype(distance.dtype, np.floating):
            raise MetadepthError(f"{depth_path}: depth has dtype {distance.dtype}; expected floating-point metres")
        distance = distance.astype(np.float32)
        nan = np.isnan(distance)
        distance[nan] = 0.0  # NaN marks pixels with no surface (sky, windows): invalid, not an error
        if Path(entity_path).is_file():
            valid = _dataset(entity_path, "entity ids") != -1
        else:
            valid = ~nan
        h, w = distance.shape
        f = focal_from_fov(w, math.radians(self.options.fov_x_deg))
        k = np.array([f, f, (w - 1) / 2.0, (h - 1) / 2.0], dtype=np.float32)
        depth = radial_to_planar(distance, *k)
        return Frame(rgb=tonemap(hdr, valid), depth=depth, intrinsics=k)

    def attrs(self, height: int, width: int) -> dict[str, Any]:
        return {"camera": "hypersim_pinhole", "depth_conversion": "radial distance to planar z"}


def _dataset(path: str, what: str) -> np.ndarray:
    with reading(path, what), h5py.File(path, "r") as f:
        if "dataset" not in f:
            raise MetadepthError(f"{path}: no 'dataset' in this HDF5 file (keys: {', '.join(f.keys())}); "
                                 "expected a Hypersim frame file")
        return np.asarray(f["dataset"])


def tonemap(hdr: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """HDR linear RGB -> sRGB-ish uint8 the way ml-hypersim's scene_generate_images_tonemap.py does it."""
    gamma = 1.0 / 2.2
    rgb = np.nan_to_num(hdr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if not valid.any():
        scale = 1.0
    else:
        brightness = 0.3 * rgb[..., 0] + 0.59 * rgb[..., 1] + 0.11 * rgb[..., 2]  # CCIR601 YIQ brightness
        current = np.percentile(brightness[valid], 90)
        scale = 0.0 if current < 1e-4 else 0.8 ** (1.0 / gamma) / current
    out = np.clip(np.power(np.maximum(scale * rgb, 0.0), gamma), 0.0, 1.0)
    return np.rint(out * 255.0).astype(np.uint8)
