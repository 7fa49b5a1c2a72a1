"""Rendered folder datasets (Replica, HM3D, VA as distributed with DistDepth-style renders): image files on disk.

One RGB image per frame (any format OpenCV reads; stored BGR, returned RGB) and one depth map beside it, found by a
regular-expression rename of the RGB path (relative to the source folder). Depth maps may be:
- integer images (16-bit PNG): metres = value / depth_scale (e.g. 1000 for millimetres, 4000 for quarter-mm);
- float images (.pfm, .exr) or .npy arrays: already metres, depth_scale is not applied.
Zero depth is invalid (holes in the render).

Splits: `scene` (default) assigns whole scenes (the first `scene_level` folders of the path) to train/val/test with a
seeded shuffle, so no room appears in two splits; `folder` reads the split from the first folder (train/, val/,
test/); `ratio` shuffles frames (for a dataset that is a single scene, like VA).

Presets (`replica`, `hm3d`, `va`) are this reader with defaults for that dataset; every default can be overridden
in the source's options. Check a new copy with `metadepth data inspect`: indoor median depth should be 1-5 m.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator

from tasks.io import MetadepthError
from tasks.readers.base import Frame, Reader, Sample, SplitOptions, assign_splits, one_line, reading
from tasks.readers.geometry import focal_from_fov

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class RenderedOptions(SplitOptions):
    rgb_glob: str = "**/rgb/*.png"  # RGB images, relative to the source folder
    depth_pattern: str = r"rgb/([^/]+)\.\w+$"  # regex on the RGB path (relative, '/'-separated) ...
    depth_replace: str = r"depth/\1.png"  # ... and its replacement: the depth map's path
    depth_scale: float = Field(1000.0, gt=0)  # integer depth maps: metres = value / depth_scale
    hfov_deg: float | None = Field(None, gt=0, lt=180)  # horizontal field of view -> intrinsics, if known
    intrinsics: tuple[float, float, float, float] | None = None  # or fx, fy, cx, cy at native resolution
    split_by: Literal["scene", "folder", "ratio"] = "scene"
    scene_level: int = Field(1, ge=0)  # how many leading folders name a scene

    @field_validator("depth_pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as err:
            raise ValueError(f"not a valid regular expression ({err})") from None
        return v

    @model_validator(mode="after")
    def _one_camera_model(self) -> RenderedOptions:
        if self.hfov_deg is not None and self.intrinsics is not None:
            raise ValueError("give hfov_deg or intrinsics, not both")
        return self


class RenderedReader(Reader):
    format = "rendered"
    Options = RenderedOptions

    @classmethod
    def parse_options(cls, options: Mapping[str, Any] | None) -> RenderedOptions:
        options = dict(options or {})
        if options.get("intrinsics") is not None:
            options.setdefault("hfov_deg", None)  # explicit intrinsics replace a preset's field of view
        return super().parse_options(options)

    def samples(self) -> list[Sample]:
        o = self.options
        if not self.path.is_dir():
            raise MetadepthError(f"{self.path}: not a folder; a rendered dataset is a folder of images")
        rgbs = sorted(p for p in self.path.glob(o.rgb_glob) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not rgbs:
            raise MetadepthError(f"{self.path}: no RGB images match options.rgb_glob={o.rgb_glob!r}; the folder is "
                                 "empty or laid out differently (set rgb_glob / depth_pattern / depth_replace)")
        pattern = re.compile(o.depth_pattern)
        rows = []
        for rgb in rgbs:
            rel = rgb.relative_to(self.path).as_posix()
            depth_rel, hits = pattern.subn(o.depth_replace, rel)
            if not hits or depth_rel == rel:
                raise MetadepthError(f"{rgb}: options.depth_pattern={o.depth_pattern!r} does not turn this RGB path "
                                     "into a different depth path; fix depth_pattern / depth_replace")
            split, scene = self._split_and_scene(rgb, PurePosixPath(rel).parts[:-1])
            rows.append((rel, split, scene, str(rgb), str(self.path / depth_rel)))
        splits = self._assign(rows)
        return [Sample(source_id=rel, scene=scene, split=splits[rel], file=rgb, ref=(rgb, depth))
                for rel, _, scene, rgb, depth in rows]

    def _split_and_scene(self, rgb: Path, folders: tuple[str, ...]) -> tuple[str, str]:
        o = self.options
        if o.split_by == "folder":
            if not folders or folders[0] not in ("train", "val", "test"):
                raise MetadepthError(f"{rgb}: split_by=folder needs the path to start with train/, val/ or test/")
            return folders[0], "/".join(folders[1 : 1 + o.scene_level])
        return "", "/".join(folders[: o.scene_level])

    def _assign(self, rows: list[tuple[str, str, str, str, str]]) -> dict[str, str]:
        """Relative RGB path -> split."""
        o = self.options
        if o.split_by == "folder":
            return {rel: split for rel, split, _, _, _ in rows}
        if o.split_by == "scene":
            scenes = {scene for _, _, scene, _, _ in rows}
            if len(scenes) < 3:
                raise MetadepthError(f"{self.path}: split_by=scene needs at least 3 scenes but found {len(scenes)} "
                                     f"(scene = the first {o.scene_level} folder(s)); use split_by: ratio")
            by_scene = assign_splits(list(scenes), o.val_fraction, o.test_fraction, o.seed)
            return {rel: by_scene[scene] for rel, _, scene, _, _ in rows}
        return assign_splits([r[0] for r in rows], o.val_fraction, o.test_fraction, o.seed)

    def load(self, sample: Sample) -> Frame:
        rgb_path, depth_path = sample.ref
        if not Path(depth_path).is_file():
            raise MetadepthError(f"{rgb_path}: no depth map at {depth_path}; every RGB image needs one (RGB and "
                                 "depth counts differ), or fix options.depth_pattern / depth_replace")
        bgr = _imread(rgb_path, cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # OpenCV decodes to BGR; shards are RGB
        depth = self._depth(depth_path)
        h, w = depth.shape[:2]
        return Frame(rgb=rgb, depth=depth, intrinsics=self._intrinsics(h, w))

    def _depth(self, path: str) -> np.ndarray:
        if path.lower().endswith(".npy"):
            with reading(path, "depth array"):
                raw = np.load(path, allow_pickle=False)
        else:
            raw = _imread(path, cv2.IMREAD_UNCHANGED)
        if raw.ndim != 2:
            raise MetadepthError(f"{path}: depth map has shape {raw.shape}; expected a single-channel (H, W) image")
        if raw.dtype == np.uint8:
            raise MetadepthError(f"{path}: depth map is 8-bit; expected a 16-bit PNG (or float metres), 8 bits "
                                 "cannot hold metric depth")
        if np.issubdtype(raw.dtype, np.integer):
            return raw.astype(np.float32) / np.float32(self.options.depth_scale)
        if np.issubdtype(raw.dtype, np.floating):
            return raw.astype(np.float32)
        raise MetadepthError(f"{path}: depth map has dtype {raw.dtype}; expected uint16 or float")

    def _intrinsics(self, h: int, w: int) -> np.ndarray | None:
        o = self.options
        if o.intrinsics is not None:
            return np.array(o.intrinsics, dtype=np.float32)
        if o.hfov_deg is not None:
            f = focal_from_fov(w, math.radians(o.hfov_deg))
            return np.array([f, f, (w - 1) / 2.0, (h - 1) / 2.0], dtype=np.float32)
        return None

    def attrs(self, height: int, width: int) -> dict[str, Any]:
        return {"depth_scale": self.options.depth_scale}


def _imread(path: str, flags: int) -> np.ndarray:
    """cv2.imread returns None (no exception) for a missing, truncated or non-image file: make that an error."""
    try:
        img = cv2.imread(path, flags)
    except cv2.error as err:
        raise MetadepthError(f"{path}: cannot decode image ({one_line(err)}); re-export it, or pass --skip-bad"
                             ) from None
    if img is None:
        raise MetadepthError(f"{path}: unreadable image (missing, truncated or not an image file); re-export it or "
                             "pass --skip-bad to quarantine it")
    return img


class ReplicaReader(RenderedReader):
    """Replica renders (habitat, 90 degree horizontal FOV, depth in millimetres), one folder per scene."""

    format = "replica"
    defaults = {"depth_scale": 1000.0, "hfov_deg": 90.0, "split_by": "scene"}


class Hm3dReader(RenderedReader):
    """HM3D renders (habitat, 90 degree horizontal FOV, depth in millimetres), one folder per scene."""

    format = "hm3d"
    defaults = {"depth_scale": 1000.0, "hfov_deg": 90.0, "split_by": "scene"}


class VaReader(RenderedReader):
    """VA (Virtual Apartment, DistDepth): one apartment, so frames are split by a seeded ratio; depth / 4000."""

    format = "va"
    defaults = {"depth_scale": 4000.0, "hfov_deg": 90.0, "split_by": "ratio"}
