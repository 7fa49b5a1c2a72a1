"""Doors and windows: wall openings with frames, and the corridor or outdoor 'pocket' box seen through each."""

from __future__ import annotations

import numpy as np

from tasks.preprocess.synthetic.draft import (
    CEILING_GREY,
    LAMP_DROP_M,
    PLACEMENT_TRIES,
    WALL_FACES,
    WALL_MARGIN_M,
    RoomDraft,
    footprint,
    wall_anchor,
    wall_length,
)
from tasks.preprocess.synthetic.materials import grey, kelvin_tint

DOOR_HEIGHT_M = (2.0, 2.2)  # doorway height range (clipped below the ceiling)
WINDOW_HEIGHT_M = (1.0, 1.8)  # window height range (clipped below the ceiling)
OPENING_TOP_CLEARANCE_M = 0.15  # minimum wall left above a door or window
OPENING_GAP_M = 0.3  # minimum wall between two openings on one wall
CORRIDOR_EXTRA_WIDTH_M = (0.2, 2.0)  # corridor extent beyond each side of its doorway
OUTDOOR_HALF_WIDTH_M = 40.0  # outdoor backdrop extends this far sideways
OUTDOOR_GROUND_DROP_M = (0.0, 8.0)  # outdoor ground below the room floor (upper storeys)
OUTDOOR_TOP_M = (4.0, 20.0)  # height of the facade / tree line above the room floor
DOOR_CLEARANCE_M = 0.9  # floor kept free in front of doorways
WINDOW_LIGHT_INSET_M = 0.5  # window light source sits this far inside the room
FRAME_WIDTH_M = 0.07  # width of door/window jambs, headers, sills and mullions
FRAME_DEPTH_M = 0.06  # how far frames reach into the wall opening
FRAME_PROTRUDE_M = 0.02  # how far frames stand out from the wall into the room
SILL_DEPTH_M = 0.12  # how far a window sill juts into the room
DOOR_LEAF_PROB = 0.6  # chance that a doorway shows its door swung open
DOOR_LEAF_M = 0.04  # door leaf thickness
DAYLIGHT_K = 6500.0  # colour temperature of window light
DOOR_FRAME_GREY = (0.3, 0.9)  # door casings (display-referred grey range)
WINDOW_FRAME_GREY = (0.5, 0.95)  # window frames
GRASS_RGB = (np.array([0.1, 0.22, 0.05]), np.array([0.16, 0.3, 0.08]))  # outdoor ground (linear base, second)
TREES_RGB = (np.array([0.05, 0.15, 0.03]), np.array([0.15, 0.3, 0.08]))  # outdoor tree line
SKY_RGB = (np.array([0.45, 0.62, 0.9]), np.full(3, 0.95))  # blue sky and clouds
GLASS_RGB = np.array([0.05, 0.08, 0.12])  # facade windows
FACADE_ALBEDO = (0.1, 0.3)  # facade wall brightness (linear)
FACADE_PROB = 0.5  # chance that a window looks onto a building rather than trees
SAME_FLOOR_PROB = 0.5  # chance that a corridor continues the room's floor


def _place_opening(room: RoomDraft, width: float, v0: float, v1: float) -> tuple[int, float, float] | None:
    for _ in range(PLACEMENT_TRIES):
        face = int(room.rng.choice(WALL_FACES))
        length = wall_length(face, room.size)
        w = min(width, length - 2 * WALL_MARGIN_M)
        u0 = room.rng.uniform(WALL_MARGIN_M, length - WALL_MARGIN_M - w)
        clash = any(f == face and u0 < e1 + OPENING_GAP_M and s0 < u0 + w + OPENING_GAP_M
                    for f, s0, e1, _, _ in room.openings)
        if not clash:
            room.openings.append((face, u0, u0 + w, v0, v1))
            return face, u0, u0 + w
    return None


def _pocket_box(room: RoomDraft, face: int, u0: float, u1: float, depth: float, y0: float, y1: float) -> np.ndarray:
    """The box behind an opening: shares the opening's wall plane and extends outwards."""
    axis, side = divmod(face, 2)
    u_axis = 2 if axis == 0 else 0
    plane = room.size[axis] if side else 0.0
    box = np.zeros(6)
    box[[axis, axis + 3]] = (plane, plane + depth) if side else (plane - depth, plane)
    box[[u_axis, u_axis + 3]] = u0, u1
    box[[1, 4]] = y0, y1
    return box


def _add_frame(room: RoomDraft, face: int, u0: float, u1: float, v0: float, v1: float, material: int,
               sill: bool) -> None:
    """Jambs and header (and a sill with a mullion for windows) so openings read as doors and windows."""
    box = wall_anchor(face, room.size, u0).box
    w, f = u1 - u0, FRAME_WIDTH_M
    room.add_box(box(-f, 0, -FRAME_DEPTH_M, FRAME_PROTRUDE_M, v0, v1 + f), material)
    room.add_box(box(w, w + f, -FRAME_DEPTH_M, FRAME_PROTRUDE_M, v0, v1 + f), material)
    room.add_box(box(-f, w + f, -FRAME_DEPTH_M, FRAME_PROTRUDE_M, v1, v1 + f), material)
    if sill:
        room.add_box(box(-f, w + f, -FRAME_DEPTH_M, SILL_DEPTH_M, v0 - f, v0), material)
        room.add_box(box(w / 2 - f / 2, w / 2 + f / 2, -FRAME_DEPTH_M, 0, v0, v1), material)


def add_doors(room: RoomDraft) -> None:
    """Doorways into lit corridors, some with the door swung open; the floor in front of them stays free."""
    spec, rng, mats = room.spec, room.rng, room.mats
    for _ in range(rng.integers(spec.doors[0], spec.doors[1] + 1)):
        top = min(rng.uniform(*DOOR_HEIGHT_M), room.size[1] - OPENING_TOP_CLEARANCE_M)
        placed = _place_opening(room, rng.uniform(*spec.door_width_m), 0.0, top)
        if placed is None:
            continue
        face, u0, u1 = placed
        extra = rng.uniform(*CORRIDOR_EXTRA_WIDTH_M, size=2)
        pocket = _pocket_box(room, face, u0 - extra[0], u1 + extra[1], rng.uniform(*spec.corridor_depth_m),
                             0.0, room.size[1])
        room.pockets.append(pocket)
        corridor_floor = room.floor_material if rng.random() < SAME_FLOOR_PROB else mats.surface(
            rng, spec, spec.floor_hsv, spec.floor_textures)
        corridor_wall = mats.surface(rng, spec, spec.wall_hsv, spec.wall_textures)
        ceiling = mats.add(rng, grey(rng, CEILING_GREY), "plain")
        room.pocket_mats.append(np.array([corridor_wall, corridor_wall, corridor_floor, ceiling,
                                          corridor_wall, corridor_wall], np.int64))
        room.pocket_outdoor.append(False)
        centre = (pocket[:3] + pocket[3:]) / 2
        centre[1] = pocket[4] - LAMP_DROP_M
        intensity = rng.uniform(*spec.light_intensity) * kelvin_tint(room.kelvin)
        room.pocket_lights.append((centre, intensity))
        frame = mats.add(rng, grey(rng, DOOR_FRAME_GREY), "plain")
        _add_frame(room, face, u0, u1, 0.0, top, frame, sill=False)
        anchor = wall_anchor(face, room.size, u0)
        if rng.random() < DOOR_LEAF_PROB:  # door swung open into the corridor, hinged at one jamb
            hinge = 0.0 if rng.random() < 0.5 else u1 - u0 - DOOR_LEAF_M  # left or right jamb
            room.add_box(anchor.box(hinge, hinge + DOOR_LEAF_M, -(u1 - u0), -FRAME_DEPTH_M, 0, top),
                         room.furniture_material())
        # Keep the doorway walkable so furniture does not block the view into the corridor.
        room.occupied.append(footprint(anchor.box(0, u1 - u0, 0, DOOR_CLEARANCE_M, 0, 1)))


def add_windows(room: RoomDraft) -> None:
    """Windows onto a self-lit outdoor backdrop (ground, facade or trees, sky), each letting daylight in."""
    spec, rng, mats = room.spec, room.rng, room.mats
    for _ in range(rng.integers(spec.windows[0], spec.windows[1] + 1)):
        sill = rng.uniform(*spec.window_sill_m)
        top = min(sill + rng.uniform(*WINDOW_HEIGHT_M), room.size[1] - OPENING_TOP_CLEARANCE_M)
        placed = _place_opening(room, rng.uniform(*spec.window_width_m), sill, top)
        if placed is None:
            continue
        face, u0, u1 = placed
        room.pockets.append(_pocket_box(room, face, -OUTDOOR_HALF_WIDTH_M, OUTDOOR_HALF_WIDTH_M,
                                        rng.uniform(*spec.outdoor_depth_m), -rng.uniform(*OUTDOOR_GROUND_DROP_M),
                                        rng.uniform(*OUTDOOR_TOP_M)))
        glow = rng.uniform(*spec.outdoor_brightness)
        ground = mats.add(rng, GRASS_RGB[0], "foliage", second=GRASS_RGB[1], emission=glow)
        if rng.random() < FACADE_PROB:  # a building across the street, else a tree line
            backdrop = mats.add(rng, np.full(3, rng.uniform(*FACADE_ALBEDO)), "facade", second=GLASS_RGB,
                                emission=glow)
        else:
            backdrop = mats.add(rng, TREES_RGB[0], "foliage", second=TREES_RGB[1], emission=glow)
        sky = mats.add(rng, SKY_RGB[0], "sky", second=SKY_RGB[1], emission=glow, has_depth=False)
        room.pocket_mats.append(np.array([backdrop, backdrop, ground, sky, backdrop, backdrop], np.int64))
        room.pocket_outdoor.append(True)
        room.pocket_lights.append((np.zeros(3), np.zeros(3)))  # outdoor surfaces are self-lit
        frame = mats.add(rng, grey(rng, WINDOW_FRAME_GREY), "plain")
        _add_frame(room, face, u0, u1, sill, top, frame, sill=True)
        axis, side = divmod(face, 2)
        centre = np.zeros(3)
        centre[2 if axis == 0 else 0] = (u0 + u1) / 2
        centre[1] = (sill + top) / 2
        centre[axis] = room.size[axis] - WINDOW_LIGHT_INSET_M if side else WINDOW_LIGHT_INSET_M
        area = (u1 - u0) * (top - sill)
        room.lights.append((centre, spec.window_light * area * kelvin_tint(DAYLIGHT_K)))
