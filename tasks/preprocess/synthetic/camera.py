"""The pinhole camera and where a hand-held-like camera stands in a room."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tasks.preprocess.synthetic.scene import Scene
from tasks.preprocess.synthetic.specs import DomainSpec

CAMERA_WALL_MARGIN_M = 0.45  # camera keeps this far from walls
CAMERA_FURNITURE_MARGIN_M = 0.3  # camera keeps this far from furniture footprints
CAMERA_TRIES = 40  # rejection-sampling attempts for a camera position
LOOK_MIN_FRACTION = 0.35  # look-at target at least this fraction of the room diagonal away
YAW_JITTER_DEG = 25.0  # random deviation of the view direction from the look-at target


@dataclass(frozen=True)
class Camera:
    """Pinhole camera; rotation columns are the camera's right, down and forward axes in world coordinates."""

    position: np.ndarray  # (3,)
    rotation: np.ndarray  # (3, 3) world-from-camera
    fx: float
    fy: float
    cx: float
    cy: float

    @property
    def intrinsics(self) -> np.ndarray:
        return np.array([self.fx, self.fy, self.cx, self.cy], dtype=np.float32)


def look_camera(position: tuple[float, float, float], yaw_deg: float, pitch_deg: float, roll_deg: float,
                hfov_deg: float, height: int, width: int) -> Camera:
    """Builds a camera from viewing angles; yaw 0 looks along +z, positive pitch looks up."""
    yaw, pitch, roll = (math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg))
    forward = np.array([math.cos(pitch) * math.sin(yaw), math.sin(pitch), math.cos(pitch) * math.cos(yaw)])
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= math.hypot(*right)  # not np.linalg.norm: its BLAS kernel differs per CPU in the last bit
    down = np.cross(forward, right)
    # Roll turns the image plane axes about the optical axis.
    right, down = (math.cos(roll) * right + math.sin(roll) * down,
                   -math.sin(roll) * right + math.cos(roll) * down)
    fx = width / (2.0 * math.tan(math.radians(hfov_deg) / 2.0))
    return Camera(position=np.asarray(position, dtype=np.float64),
                  rotation=np.stack([right, down, forward], axis=1),
                  fx=fx, fy=fx, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0)


def sample_camera(spec: DomainSpec, scene: Scene, rng: np.random.Generator, height: int, width: int) -> Camera:
    """A hand-held-like viewpoint: inside the room, clear of furniture, looking roughly across the room."""
    size = scene.room[3:]
    lo, hi = CAMERA_WALL_MARGIN_M, size[[0, 2]] - CAMERA_WALL_MARGIN_M
    r = scene.obstacles
    best, best_clearance = None, -np.inf
    for _ in range(CAMERA_TRIES):
        xz = rng.uniform(lo, hi)
        if len(r) == 0:
            best = xz
            break
        dx = np.maximum(np.maximum(r[:, 0] - xz[0], xz[0] - r[:, 1]), 0.0)
        dz = np.maximum(np.maximum(r[:, 2] - xz[1], xz[1] - r[:, 3]), 0.0)
        clearance = float(np.hypot(dx, dz).min())
        if clearance > best_clearance:
            best, best_clearance = xz, clearance
        if clearance >= CAMERA_FURNITURE_MARGIN_M:
            break
    diagonal = float(np.hypot(size[0], size[2]))
    for _ in range(CAMERA_TRIES):
        target = rng.uniform(0.0, size[[0, 2]])
        if np.hypot(*(target - best)) >= LOOK_MIN_FRACTION * diagonal:
            break
    yaw = math.degrees(math.atan2(target[0] - best[0], target[1] - best[1]))
    yaw += rng.uniform(-1, 1) * YAW_JITTER_DEG
    cam_h = min(rng.uniform(*spec.camera_height_m), size[1] - CAMERA_WALL_MARGIN_M)
    return look_camera((best[0], cam_h, best[1]), yaw, rng.uniform(*spec.pitch_deg),
                       rng.uniform(-1, 1) * spec.max_roll_deg, rng.uniform(*spec.hfov_deg), height, width)
