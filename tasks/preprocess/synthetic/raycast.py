"""Ray casting against axis-aligned boxes: exact planar depth and what each pixel sees."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.preprocess.synthetic.camera import Camera
from tasks.preprocess.synthetic.scene import Scene

DIR_EPS = 1e-9  # replaces exactly-zero ray components so slab tests never divide by zero
MIN_HIT_DISTANCE = 1e-4  # ignore box hits closer than this along a ray
NEAR_PLANE_M = 1e-3  # box corners closer than this to the camera plane cannot be projected
MIN_COS = 0.2  # caps the footprint growth of surfaces seen at grazing angles


@dataclass
class Hits:
    t: np.ndarray  # (P,) planar depth (ray directions have unit camera-z)
    point: np.ndarray  # (P, 3)
    axis: np.ndarray  # (P,) axis of the hit face's normal
    normal: np.ndarray  # (P, 3)
    material: np.ndarray  # (P,)
    region: np.ndarray  # (P,) REGION_*
    owner: np.ndarray  # (P,) pocket index for corridor/outdoor hits, box index for box hits
    footprint: np.ndarray  # (P,) size of the pixel on the surface (metres), for texture filtering


REGION_ROOM, REGION_CORRIDOR, REGION_OUTDOOR, REGION_BOX = 0, 1, 2, 3
BOX_CORNERS = np.array([[x, y, z] for x in (0, 3) for y in (1, 4) for z in (2, 5)])  # box row columns


def _ray_grid(camera: Camera, height: int, width: int) -> np.ndarray:
    """World-space ray directions scaled so their camera-z component is 1: ray parameter = planar depth."""
    v, u = np.mgrid[0:height, 0:width]
    cam = np.stack([(u.ravel() - camera.cx) / camera.fx, (v.ravel() - camera.cy) / camera.fy,
                    np.ones(height * width)], axis=1)
    return np.einsum("pc,wc->pw", cam, camera.rotation)  # einsum: no BLAS threads for a 3x3 product


def _exit_boxes(origin: np.ndarray, dirs: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where rays starting inside boxes (one box per ray) leave them: (t, axis)."""
    far = np.where(dirs > 0, boxes[:, 3:], boxes[:, :3])
    t_axes = (far - origin) / dirs
    axis = t_axes.argmin(1)
    return t_axes[np.arange(len(dirs)), axis], axis


def _box_rects(camera: Camera, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel rectangle [v0, v1) x [u0, u1) that can see each box, so each box is tested only there."""
    corners = boxes[:, BOX_CORNERS]  # (K, 8, 3)
    cam = np.einsum("kcw,wd->kcd", corners - camera.position, camera.rotation)  # world -> camera coordinates
    z = cam[..., 2]
    in_front = z > NEAR_PLANE_M
    with np.errstate(divide="ignore", invalid="ignore"):
        u = camera.fx * cam[..., 0] / z + camera.cx
        v = camera.fy * cam[..., 1] / z + camera.cy
    # Pixel centres sit at integers; +2 makes the exclusive end cover the last centre despite rounding.
    rects = np.stack([np.floor(v.min(1)), np.floor(v.max(1)) + 2,
                      np.floor(u.min(1)), np.floor(u.max(1)) + 2], axis=1)
    straddles = in_front.any(1) & ~in_front.all(1)  # projection unbounded: test the whole image
    rects[straddles] = (0, height, 0, width)
    rects[~in_front.any(1)] = 0  # entirely behind the camera
    rects = np.clip(np.nan_to_num(rects), 0, [height, height, width, width])
    return rects.astype(np.int64)


def _nearest_box(camera: Camera, inv: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest box hit per pixel (t or inf, box index), testing each box only inside its screen rectangle.

    inv holds 1 / ray direction as (3, H, W) float32. Because every ray starts at the camera, the near and far
    slab planes of an axis are known per box from the camera's side of the slab, which saves the min/max.
    """
    _, height, width = inv.shape
    t_best = np.full((height, width), np.inf, np.float32)
    k_best = np.zeros((height, width), np.int64)
    rel_lo = (boxes[:, :3] - camera.position).astype(np.float32)
    rel_hi = (boxes[:, 3:] - camera.position).astype(np.float32)
    rects = _box_rects(camera, boxes, height, width)
    for k in np.flatnonzero((rects[:, 1] > rects[:, 0]) & (rects[:, 3] > rects[:, 2])):
        v0, v1, u0, u1 = rects[k]
        t_near = t_far = None
        for a in range(3):
            inv_a = inv[a, v0:v1, u0:u1]
            lo, hi = rel_lo[k, a], rel_hi[k, a]
            if lo > 0:  # camera on the low side of the slab: rays moving up enter at lo, leave at hi
                near, far = lo * inv_a, hi * inv_a
            elif hi < 0:  # camera on the high side
                near, far = hi * inv_a, lo * inv_a
            else:  # camera inside the slab: only where the ray leaves it matters
                near, far = None, np.maximum(lo * inv_a, hi * inv_a)
            if near is not None:
                t_near = near if t_near is None else np.maximum(t_near, near, out=t_near)
            t_far = far if t_far is None else np.minimum(t_far, far, out=t_far)
        if t_near is None:  # camera inside the box
            continue
        best = t_best[v0:v1, u0:u1]
        hit = (t_near <= t_far) & (t_near > MIN_HIT_DISTANCE) & (t_near < best)
        np.copyto(best, t_near, where=hit)
        np.copyto(k_best[v0:v1, u0:u1], k, where=hit)
    return t_best.ravel(), k_best.ravel()


def trace(scene: Scene, camera: Camera, height: int, width: int) -> Hits:
    """First hit of every pixel's ray: room shell, then openings into pockets, then furniture boxes."""
    origin = camera.position
    dirs = _ray_grid(camera, height, width)
    dirs = np.where(np.abs(dirs) < DIR_EPS, DIR_EPS, dirs)
    n = len(dirs)
    rows = np.arange(n)
    positive = dirs > 0

    t, axis = _exit_boxes(origin, dirs, np.broadcast_to(scene.room, (n, 6)))
    face = axis * 2 + positive[rows, axis]
    material = scene.room_materials[face]
    region = np.full(n, REGION_ROOM)
    owner = np.zeros(n, np.int64)

    if len(scene.openings):
        point = origin + t[:, None] * dirs
        u = np.where(axis == 0, point[:, 2], point[:, 0])
        op = scene.openings
        inside = ((face[:, None] == op[:, 0]) & (u[:, None] >= op[:, 1]) & (u[:, None] <= op[:, 2])
                  & (point[:, 1:2] >= op[:, 3]) & (point[:, 1:2] <= op[:, 4]))
        through = np.flatnonzero(inside.any(1))
        pocket = inside[through].argmax(1)
        t_p, axis_p = _exit_boxes(origin, dirs[through], scene.pockets[pocket])
        t[through], axis[through] = t_p, axis_p
        face_p = axis_p * 2 + positive[through, axis_p]
        material[through] = scene.pocket_materials[pocket, face_p]
        region[through] = np.where(scene.pocket_outdoor[pocket], REGION_OUTDOOR, REGION_CORRIDOR)
        owner[through] = pocket

    inv = np.ascontiguousarray((1.0 / dirs).T.reshape(3, height, width), dtype=np.float32)
    t_box, k = _nearest_box(camera, inv, scene.boxes)
    closer = np.flatnonzero(t_box < t)
    if len(closer):
        box = scene.boxes[k[closer]]
        d = dirs[closer]
        t_entry_axes = np.minimum((box[:, :3] - origin) / d, (box[:, 3:] - origin) / d)
        axis_b = t_entry_axes.argmax(1)
        t[closer] = t_entry_axes[np.arange(len(closer)), axis_b]  # exact float64 depth
        axis[closer] = axis_b
        material[closer] = scene.box_materials[k[closer], axis_b * 2 + ~positive[closer, axis_b]]
        region[closer] = REGION_BOX
        owner[closer] = k[closer]

    normal = np.zeros((n, 3), np.float32)
    normal[rows, axis] = -np.sign(dirs[rows, axis])
    ray_len = np.sqrt((dirs * dirs).sum(1))
    cos = np.maximum(np.abs(dirs[rows, axis]) / ray_len, MIN_COS)
    return Hits(t=t, point=(origin + t[:, None] * dirs).astype(np.float32), axis=axis, normal=normal,
                 material=material, region=region, owner=owner,
                 footprint=(t * ray_len / (camera.fx * cos)).astype(np.float32))


def trace_depth(scene: Scene, camera: Camera, height: int, width: int) -> np.ndarray:
    """Planar depth of the scene geometry, without range limits: the ground truth the renderer reports."""
    hits = trace(scene, camera, height, width)
    return hits.t.reshape(height, width).astype(np.float32)
