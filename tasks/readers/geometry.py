"""Image geometry shared by the readers: the one resize policy, crop boxes, and radial-to-planar depth.

Convention (the same as the synthetic generator): pixel centres sit at integer coordinates, so an image of width W
spans [-0.5, W - 0.5] and its centre is cx = (W - 1) / 2.
"""

from __future__ import annotations

import cv2
import numpy as np


def fit_to_resolution(
    rgb: np.ndarray, depth: np.ndarray, intrinsics: np.ndarray | None, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """THE policy that brings a frame of any size to the training resolution (height, width).

    Scale uniformly so the image covers the target (the shorter side, relative to the target's aspect, fits
    exactly), then centre-crop the excess: no stretching, so focal lengths stay square and geometry is preserved.
    RGB is resampled with area averaging when shrinking (no aliasing) and bilinear when enlarging; depth always
    with exact nearest-neighbour, because interpolating across a depth edge invents points floating between the
    foreground and the background, and averaging with invalid zeros invents near-zero depth. The intrinsics follow
    the same transform: u' + 0.5 = (u + 0.5) * s - crop_offset.
    """
    h, w = depth.shape
    scale = max(height / h, width / w)
    rh, rw = max(height, round(h * scale)), max(width, round(w * scale))
    if (rh, rw) != (h, w):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (rw, rh), interpolation=interp)
        depth = cv2.resize(depth, (rw, rh), interpolation=cv2.INTER_NEAREST_EXACT)
    top, left = (rh - height) // 2, (rw - width) // 2
    rgb = np.ascontiguousarray(rgb[top : top + height, left : left + width])
    depth = np.ascontiguousarray(depth[top : top + height, left : left + width], dtype=np.float32)
    if intrinsics is not None:
        fx, fy, cx, cy = (float(v) for v in intrinsics)
        sx, sy = rw / w, rh / h
        intrinsics = np.array([fx * sx, fy * sy, (cx + 0.5) * sx - 0.5 - left, (cy + 0.5) * sy - 0.5 - top],
                              dtype=np.float32)
    return rgb, depth, intrinsics


def map_box(box: tuple[int, int, int, int], native: tuple[int, int], height: int, width: int) -> list[int]:
    """A crop box (top, bottom, left, right; pixel edges, numpy-slice style) at native size, after
    `fit_to_resolution` to (height, width), clipped to the image. Used to record NYU's Eigen crop."""
    h, w = native
    scale = max(height / h, width / w)
    rh, rw = max(height, round(h * scale)), max(width, round(w * scale))
    sy, sx = rh / h, rw / w
    top, left = (rh - height) // 2, (rw - width) // 2
    t, b, left_edge, r = box
    return [int(np.clip(round(t * sy - top), 0, height)), int(np.clip(round(b * sy - top), 0, height)),
            int(np.clip(round(left_edge * sx - left), 0, width)), int(np.clip(round(r * sx - left), 0, width))]


def radial_to_planar(distance: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """Distance to the camera centre -> planar depth z: z = d / sqrt(1 + ((u-cx)/fx)^2 + ((v-cy)/fy)^2)."""
    h, w = distance.shape
    u = (np.arange(w, dtype=np.float64) - cx) / fx
    v = (np.arange(h, dtype=np.float64) - cy) / fy
    norm = np.sqrt(1.0 + u[None, :] ** 2 + v[:, None] ** 2)
    return (distance / norm).astype(np.float32)


def focal_from_fov(width: int, fov_x_rad: float) -> float:
    return width / 2.0 / np.tan(fov_x_rad / 2.0)
