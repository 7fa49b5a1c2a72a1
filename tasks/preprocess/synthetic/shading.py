"""Shading: albedo from the patterns, cheap ambient occlusion and Lambertian point lights (linear radiance)."""

from __future__ import annotations

import numpy as np

from tasks.preprocess.synthetic.materials import Materials
from tasks.preprocess.synthetic.numerics import exp32
from tasks.preprocess.synthetic.raycast import MIN_HIT_DISTANCE, REGION_BOX, REGION_CORRIDOR, REGION_ROOM, Hits
from tasks.preprocess.synthetic.scene import Scene
from tasks.preprocess.synthetic.textures import PATTERN_NAMES, PATTERNS

LIGHT_FALLOFF_M = 2.5  # distance at which a lamp's irradiance halves
AMBIENT_BASE, AMBIENT_UP = 0.85, 0.15  # hemisphere ambient: up-facing surfaces get a little more
CORRIDOR_LIGHT = 0.6  # ambient scale behind doorways, which the room's lamps do not reach
AO_RADIUS_M = 0.35  # reach of the edge darkening
CONTACT_RADIUS_M = 0.25  # reach of the darkening around furniture feet
CONTACT_FLOOR_M = 0.02  # hits below this height count as floor for contact darkening

# Texture coordinates per hit axis: the two world axes spanning the face (u horizontal, v vertical on walls).
U_AXIS = np.array([2, 0, 0])
V_AXIS = np.array([1, 2, 1])


def _albedo(materials: Materials, hits: Hits) -> np.ndarray:
    rows = np.arange(len(hits.t))
    u = hits.point[rows, U_AXIS[hits.axis]]
    v = hits.point[rows, V_AXIS[hits.axis]]
    m = hits.material
    swap = materials.swap_uv[m] & (hits.axis == 1)  # only floors/ceilings/tops rotate: walls keep v vertical
    u, v = np.where(swap, v, u), np.where(swap, u, v)
    out = np.empty((len(m), 3), np.float32)
    pattern = materials.pattern[m]
    for pid in np.unique(pattern):
        sel = np.flatnonzero(pattern == pid)
        ms = m[sel]
        out[sel] = PATTERNS[PATTERN_NAMES[pid]](u[sel], v[sel], materials.base[ms], materials.second[ms],
                                                materials.seed[ms], materials.scale[ms], hits.footprint[sel])
    return out


def _occlusion(scene: Scene, hits: Hits, strength: float) -> np.ndarray:
    """Cheap ambient occlusion: darker near room edges, around furniture feet and at the bottom of boxes."""
    ao = np.ones(len(hits.t), np.float32)
    room = np.flatnonzero(hits.region == REGION_ROOM)
    p = hits.point[room]
    room_box = scene.room.astype(np.float32)
    plane_dist = np.minimum(p - room_box[:3], room_box[3:] - p)
    plane_dist[np.arange(len(room)), hits.axis[room]] = np.inf  # ignore the hit face's own plane
    edge = plane_dist.min(1)
    ao[room] -= strength * exp32(-edge / AO_RADIUS_M)
    floor = room[p[:, 1] < CONTACT_FLOOR_M]
    if len(floor) and len(scene.obstacles):
        q = hits.point[floor][:, [0, 2]]
        r = scene.obstacles
        dx = np.maximum(np.maximum(r[:, 0] - q[:, :1], q[:, :1] - r[:, 1]), 0.0)
        dz = np.maximum(np.maximum(r[:, 2] - q[:, 1:], q[:, 1:] - r[:, 3]), 0.0)
        near = exp32(-np.sqrt(dx * dx + dz * dz).min(1) / CONTACT_RADIUS_M)
        ao[floor] *= 1.0 - strength * near
    boxes = np.flatnonzero(hits.region == REGION_BOX)
    ao[boxes] -= strength * exp32(-hits.point[boxes, 1] / AO_RADIUS_M)
    return np.clip(ao, 0.0, 1.0)


def _lambert(points: np.ndarray, normals: np.ndarray, light_pos: np.ndarray) -> np.ndarray:
    """Cosine-weighted irradiance from point lights with a soft inverse-square falloff."""
    to_light = (light_pos - points).astype(np.float32)
    dist2 = np.einsum("ij,ij->i", to_light, to_light)
    dist = np.sqrt(np.maximum(dist2, MIN_HIT_DISTANCE))
    cos = np.maximum(np.einsum("ij,ij->i", to_light, normals), 0.0) / dist
    return cos / (1.0 + dist2 / LIGHT_FALLOFF_M ** 2)


def radiance(scene: Scene, hits: Hits, ao_strength: float) -> np.ndarray:
    """Linear radiance: ambient with fake occlusion plus Lambertian lamps; emitters light themselves."""
    albedo = _albedo(scene.materials, hits)
    hemi = AMBIENT_BASE + AMBIENT_UP * hits.normal[:, 1]
    irradiance = (hemi * _occlusion(scene, hits, ao_strength))[:, None] * scene.ambient_rgb.astype(np.float32)
    direct = np.zeros_like(irradiance)
    for pos, rgb in zip(scene.light_pos, scene.light_rgb, strict=True):
        direct += _lambert(hits.point, hits.normal, pos)[:, None] * rgb.astype(np.float32)
    irradiance += direct * ((hits.region == REGION_ROOM) | (hits.region == REGION_BOX))[:, None]
    # Spaces behind doorways are lit by their own lamp: the wall would block the room's lights.
    corridor = np.flatnonzero(hits.region == REGION_CORRIDOR)
    if len(corridor):
        pocket = hits.owner[corridor]
        own_lamp = _lambert(hits.point[corridor], hits.normal[corridor], scene.pocket_light[pocket])
        irradiance[corridor] = (irradiance[corridor] * CORRIDOR_LIGHT
                                + own_lamp[:, None] * scene.pocket_light_rgb[pocket].astype(np.float32))
    out = albedo * irradiance
    emission = scene.materials.emission[hits.material]
    glowing = np.flatnonzero(emission > 0)
    out[glowing] = albedo[glowing] * emission[glowing, None]
    return out

