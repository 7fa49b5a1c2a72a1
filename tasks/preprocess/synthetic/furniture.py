"""Furniture, chairs, wall shelves, clutter and rugs: placed on free floor (or wall) spots of a RoomDraft."""

from __future__ import annotations

import numpy as np

from tasks.preprocess.synthetic.draft import (
    LAMP_DROP_M,
    PLACEMENT_TRIES,
    WALL_FACES,
    WALL_MARGIN_M,
    Anchor,
    RoomDraft,
    footprint,
    overlaps,
    wall_anchor,
    wall_length,
)
from tasks.preprocess.synthetic.materials import hsv_colour, weighted
from tasks.preprocess.synthetic.specs import FURNITURE, Weights

FURNITURE_GAP_M = 0.1  # minimum gap between furniture footprints
DIM_JITTER = 0.15  # relative random variation of each furniture dimension
SMALL_OBJECT_SIZE_M = (0.08, 0.45)  # footprint side range of clutter boxes
SMALL_OBJECT_HEIGHT_M = (0.05, 0.4)  # height range of clutter boxes
ON_SUPPORT_PROB = 0.7  # share of clutter placed on furniture tops rather than the floor
SHELF_HEIGHT_M = (1.1, 1.9)  # wall shelf board height above the floor
SHELF_WIDTH_M = (0.6, 1.3)  # wall shelf board width
SHELF_DEPTH_M = (0.2, 0.3)  # wall shelf board depth
SHELF_CEILING_GAP_M = 0.5  # wall shelves stay this far below the ceiling
BOARD_M = 0.03  # thickness of wall shelf boards
CHAIR_SEAT_M = 0.45  # chair seat side and height
CHAIR_BACK_M = 0.45  # chair back height above the seat
CHAIR_BOARD_M = 0.06  # chair seat/back thickness and post side
CHAIR_TUCK_M = 0.15  # how far a chair slides under its table
CHAIR_SKIP_PROB = 0.3  # chance that a table side has no chair
RUG_HEIGHT_M = 0.01  # rug thickness (too thin to cast contact shadows)
RUG_SIZE_M = (1.2, 3.0)  # rug side range
FRONT_ROLES = ("panels", "books")  # body material everywhere except a patterned face towards the room
PANEL_CONTRAST = 0.5  # darkness of cabinet door seams
DARK_ALBEDO = (0.01, 0.04)  # screens, metal legs and posts (linear)
DARK_LEGS_PROB = 0.5  # chance that table legs are dark metal rather than the table's material
LEAVES_RGB = (np.array([0.03, 0.12, 0.02]), np.array([0.1, 0.3, 0.05]))  # house plants (linear base, second)
SMALL_OBJECT_TEXTURES: Weights = (("plain", 3.0), ("noise", 1.0), ("books", 0.5), ("stripes", 0.5))
RUG_TEXTURES: Weights = (("noise", 1.0), ("stripes", 1.0), ("checker", 1.0))
COUNTERTOP_TEXTURES: Weights = (("noise", 1.0), ("plain", 1.0))


def _accent_material(room: RoomDraft, pattern: str = "noise") -> int:
    return room.mats.add(room.rng, hsv_colour(room.rng, room.spec.accent_hsv), pattern,
                         contrast=room.rng.uniform(*room.spec.texture_contrast))


def _dark_material(room: RoomDraft) -> int:
    return room.mats.add(room.rng, np.full(3, room.rng.uniform(*DARK_ALBEDO)), "plain")


def _try_place(room: RoomDraft, width: float, depth: float, on_wall: bool, height: float = 0.0) -> Anchor | None:
    """Finds a free floor spot; wall pieces avoid windows they would cover."""
    rng = room.rng
    for _ in range(PLACEMENT_TRIES):
        if on_wall:
            face = int(rng.choice(WALL_FACES))
            length = wall_length(face, room.size)
            if width > length - 2 * WALL_MARGIN_M:
                continue
            a_off = rng.uniform(WALL_MARGIN_M, length - WALL_MARGIN_M - width)
            anchor = wall_anchor(face, room.size, a_off)
            blocks_window = any(f == face and a_off < u1 and u0 < a_off + width and height > v0 > 0
                                for f, u0, u1, v0, _ in room.openings)
            if blocks_window:
                continue
        else:
            a_axis = int(rng.integers(2)) * 2
            b_axis = 2 - a_axis
            a_len, b_len = room.size[a_axis], room.size[b_axis]
            margin = WALL_MARGIN_M + FURNITURE_GAP_M
            if width > a_len - 2 * margin or depth > b_len - 2 * margin:
                continue
            anchor = Anchor(a_axis, b_axis, rng.uniform(margin, a_len - margin - width),
                            rng.uniform(margin, b_len - margin - depth), 1.0)
        rect = footprint(anchor.box(0, width, 0, depth, 0, 1))
        if not overlaps(rect, room.occupied, FURNITURE_GAP_M):
            room.occupied.append(rect)
            room.obstacles.append(rect)
            return anchor
    return None


def _role_material(room: RoomDraft, role: str, body: int) -> int:
    """Material for a furniture part role; `body` is the piece's main material."""
    rng, spec, mats = room.rng, room.spec, room.mats
    base = mats.rows[body][0]
    if role == "body":
        return body
    if role == "panels":
        return mats.add(rng, base, "panels", contrast=PANEL_CONTRAST)
    if role == "books":
        return mats.add(rng, base, "books", second=base)
    if role in ("fabric", "pillow", "pot"):
        return _accent_material(room, "noise" if role == "fabric" else "plain")
    if role == "legs":
        return _dark_material(room) if rng.random() < DARK_LEGS_PROB else body
    if role == "dark":
        return _dark_material(room)
    if role == "countertop":
        return mats.surface(rng, spec, spec.floor_hsv, COUNTERTOP_TEXTURES)
    if role == "leaves":
        return mats.add(rng, LEAVES_RGB[0], "foliage", second=LEAVES_RGB[1])
    if role == "plaster":
        return mats.add(rng, mats.rows[room.wall_material][0], "plain")
    raise ValueError(f"unknown furniture part role {role!r}")


def add_furniture(room: RoomDraft, name: str) -> None:
    """One piece of the FURNITURE template `name`, scaled and jittered; tables and desks get chairs."""
    rng, spec = room.rng, room.spec
    kind = FURNITURE[name]
    scale = rng.uniform(*spec.furniture_scale)
    w, d, h = (x * scale * rng.uniform(1 - DIM_JITTER, 1 + DIM_JITTER) for x in kind.size_m)
    ceiling = room.size[1] - LAMP_DROP_M
    if kind.full_height:
        h = room.size[1]
    anchor = _try_place(room, w, d, kind.on_wall, min(h, ceiling))
    if anchor is None:
        return
    body = room.furniture_material()
    materials: dict[str, int] = {}
    for a0, a1, b0, b1, y0, y1, role in kind.parts:
        if role not in materials:
            materials[role] = _role_material(room, role, body)
        top = y1 * h if kind.full_height else min(y1 * h, ceiling)
        if y0 * h >= top:
            continue  # e.g. wall cupboards that would not fit under a low ceiling
        box = anchor.box(a0 * w, a1 * w, b0 * d, b1 * d, y0 * h, top)
        if role in FRONT_ROLES:
            room.add_box(box, body, (anchor.front_face, materials[role]))
        else:
            room.add_box(box, materials[role])
    if kind.has_top:
        room.supports.append((footprint(anchor.box(0, w, 0, d, 0, 1)), h))
    if name in ("table", "desk"):
        _add_chairs(room, anchor, w, d, kind.on_wall)


def _add_chairs(room: RoomDraft, anchor: Anchor, w: float, d: float, on_wall: bool) -> None:
    """Chairs tucked under the long side(s) of tables and desks (they may overlap the footprint)."""
    rng = room.rng
    seat, board = CHAIR_SEAT_M, CHAIR_BOARD_M
    fabric = _accent_material(room, "plain")
    for side in (1,) if on_wall else (0, 1):
        if rng.random() < CHAIR_SKIP_PROB:
            continue
        a = rng.uniform(0, max(w - seat, 0))
        b0 = d - CHAIR_TUCK_M if side else CHAIR_TUCK_M - seat
        b1 = b0 + seat
        back = (b1 - board, b1) if side else (b0, b0 + board)
        seat_box = anchor.box(a, a + seat, b0, b1, seat - board, seat)
        room.obstacles.append(footprint(seat_box))
        room.add_box(seat_box, fabric)
        room.add_box(anchor.box(a, a + seat, back[0], back[1], seat, seat + CHAIR_BACK_M), fabric)
        a_mid, b_mid = a + seat / 2, (b0 + b1) / 2
        post = anchor.box(a_mid - board / 2, a_mid + board / 2, b_mid - board / 2, b_mid + board / 2,
                          0, seat - board)
        room.add_box(post, _dark_material(room))


def add_wall_shelves(room: RoomDraft) -> None:
    """Wall-mounted boards away from the openings; clutter may stand on them."""
    rng, spec = room.rng, room.spec
    for _ in range(rng.integers(spec.wall_shelves[0], spec.wall_shelves[1] + 1)):
        face = int(rng.choice(WALL_FACES))
        length = wall_length(face, room.size)
        width = rng.uniform(*SHELF_WIDTH_M)
        if width > length - 2 * WALL_MARGIN_M:
            continue
        a_off = rng.uniform(WALL_MARGIN_M, length - WALL_MARGIN_M - width)
        y = min(rng.uniform(*SHELF_HEIGHT_M), room.size[1] - SHELF_CEILING_GAP_M)
        if any(f == face and a_off < u1 and u0 < a_off + width for f, u0, u1, _, _ in room.openings):
            continue
        anchor = wall_anchor(face, room.size, a_off)
        depth = rng.uniform(*SHELF_DEPTH_M)
        room.add_box(anchor.box(0, width, 0, depth, y - BOARD_M, y), room.furniture_material())
        room.supports.append((footprint(anchor.box(0, width, 0, depth, 0, 1)), y))


def add_small_objects(room: RoomDraft) -> None:
    """Clutter boxes, mostly on furniture tops and shelves, else on free floor."""
    rng, spec = room.rng, room.spec
    for _ in range(rng.integers(spec.small_objects[0], spec.small_objects[1] + 1)):
        sx, sz = rng.uniform(*SMALL_OBJECT_SIZE_M, size=2)
        h = rng.uniform(*SMALL_OBJECT_HEIGHT_M)
        pattern = weighted(rng, SMALL_OBJECT_TEXTURES)
        material = room.mats.add(rng, hsv_colour(rng, spec.accent_hsv), pattern,
                                 contrast=rng.uniform(*spec.texture_contrast))
        if room.supports and rng.random() < ON_SUPPORT_PROB:
            rect, top = room.supports[rng.integers(len(room.supports))]
            sx, sz = min(sx, rect[1] - rect[0]), min(sz, rect[3] - rect[2])
            x0, z0 = rng.uniform(rect[0], rect[1] - sx), rng.uniform(rect[2], rect[3] - sz)
            room.add_box(np.array([x0, top, z0, x0 + sx, top + h, z0 + sz]), material)
            continue
        for _ in range(PLACEMENT_TRIES):
            x0, z0 = rng.uniform(FURNITURE_GAP_M, room.size[[0, 2]] - [sx, sz] - FURNITURE_GAP_M)
            rect = np.array([x0, x0 + sx, z0, z0 + sz])
            if not overlaps(rect, room.occupied, FURNITURE_GAP_M):
                room.occupied.append(rect)
                room.obstacles.append(rect)
                room.add_box(np.array([x0, 0.0, z0, x0 + sx, h, z0 + sz]), material)
                break


def add_rug(room: RoomDraft) -> None:
    rng, spec = room.rng, room.spec
    sx, sz = np.minimum(rng.uniform(*RUG_SIZE_M, size=2), room.size[[0, 2]] - 2 * WALL_MARGIN_M)
    x0 = rng.uniform(WALL_MARGIN_M, room.size[0] - WALL_MARGIN_M - sx)
    z0 = rng.uniform(WALL_MARGIN_M, room.size[2] - WALL_MARGIN_M - sz)
    pattern = weighted(rng, RUG_TEXTURES)
    second = hsv_colour(rng, spec.accent_hsv) if pattern == "checker" else None
    material = room.mats.add(rng, hsv_colour(rng, spec.accent_hsv), pattern, second,
                             contrast=rng.uniform(*spec.texture_contrast))
    room.add_box(np.array([x0, 0.0, z0, x0 + sx, RUG_HEIGHT_M, z0 + sz]), material)
