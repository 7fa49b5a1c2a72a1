"""A room while it is drawn (RoomDraft), and the wall and floor geometry its elements share.

The element functions (rooms.py, openings.py, furniture.py) each take the draft and add boxes, materials, lights
and footprints to it; rooms.build_room calls them in a fixed order, because every random draw fixes the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tasks.preprocess.synthetic.materials import MaterialBuilder
from tasks.preprocess.synthetic.specs import DomainSpec

WALL_FACES = (0, 1, 4, 5)  # x = 0, x = Lx, z = 0, z = Lz
WALL_MARGIN_M = 0.3  # openings and furniture keep this far from room corners
PLACEMENT_TRIES = 25  # rejection-sampling attempts per placed item
LAMP_DROP_M = 0.2  # point light sits this far below its lamp panel (furniture stays below it)
CEILING_GREY = (0.7, 0.95)  # ceiling paint (room and corridors)

Light = tuple[np.ndarray, np.ndarray]  # position, intensity times colour


@dataclass
class RoomDraft:
    """Boxes, materials, lights and floor footprints of one room, accumulated element by element."""

    spec: DomainSpec
    rng: np.random.Generator
    size: np.ndarray  # (3,) Lx, H, Lz
    kelvin: float  # lamp colour temperature of this home
    mats: MaterialBuilder = field(default_factory=MaterialBuilder)
    boxes: list[np.ndarray] = field(default_factory=list)
    box_mats: list[np.ndarray] = field(default_factory=list)
    occupied: list[np.ndarray] = field(default_factory=list)  # floor footprints (obstacles, reserved door areas)
    obstacles: list[np.ndarray] = field(default_factory=list)  # footprints the camera must avoid
    supports: list[tuple[np.ndarray, float]] = field(default_factory=list)  # (footprint, top height) for clutter
    openings: list[tuple[int, float, float, float, float]] = field(default_factory=list)  # face, u0, u1, v0, v1
    pockets: list[np.ndarray] = field(default_factory=list)  # the box behind each opening
    pocket_mats: list[np.ndarray] = field(default_factory=list)
    pocket_outdoor: list[bool] = field(default_factory=list)
    lights: list[Light] = field(default_factory=list)
    pocket_lights: list[Light] = field(default_factory=list)
    floor_material: int = -1  # set by the shell, reused by corridors and columns
    wall_material: int = -1

    def add_box(self, box: np.ndarray, material: int, front: tuple[int, int] | None = None) -> None:
        """A box with one material, or another one on the face `front[0]`."""
        mats = np.full(6, material, np.int64)
        if front is not None:
            mats[front[0]] = front[1]
        self.boxes.append(box)
        self.box_mats.append(mats)

    def furniture_material(self) -> int:
        return self.mats.surface(self.rng, self.spec, self.spec.furniture_hsv, self.spec.furniture_textures)


def start_room(spec: DomainSpec, rng: np.random.Generator) -> RoomDraft:
    """An empty draft: the room's floor plan, ceiling height and lamp colour temperature."""
    side = rng.uniform(*spec.room_size_m, size=2)
    size = np.array([side[0], rng.uniform(*spec.ceiling_height_m), side[1]])
    return RoomDraft(spec, rng, size, kelvin=rng.uniform(*spec.light_temperature_k))


@dataclass
class Anchor:
    """Maps furniture-local (a along the wall, b away from it, y) coordinates to world coordinates."""

    a_axis: int
    b_axis: int
    a_off: float
    b_off: float
    b_sign: float

    def box(self, a0: float, a1: float, b0: float, b1: float, y0: float, y1: float) -> np.ndarray:
        out = np.zeros(6)
        out[[self.a_axis, self.a_axis + 3]] = self.a_off + a0, self.a_off + a1
        b = sorted((self.b_off + self.b_sign * b0, self.b_off + self.b_sign * b1))
        out[[self.b_axis, self.b_axis + 3]] = b
        out[[1, 4]] = y0, y1
        return out

    @property
    def front_face(self) -> int:
        return self.b_axis * 2 + (1 if self.b_sign > 0 else 0)


def wall_anchor(face: int, size: np.ndarray, a_off: float, b_off: float = 0.0) -> Anchor:
    axis, side = divmod(face, 2)
    a_axis = 2 if axis == 0 else 0
    plane = size[axis] if side else 0.0
    return Anchor(a_axis, axis, a_off, plane + (-b_off if side else b_off), -1.0 if side else 1.0)


def wall_length(face: int, size: np.ndarray) -> float:
    return float(size[2] if face // 2 == 0 else size[0])


def footprint(box: np.ndarray) -> np.ndarray:
    return box[[0, 3, 2, 5]]


def overlaps(rect: np.ndarray, rects: list[np.ndarray], gap: float) -> bool:
    return any(rect[0] < r[1] + gap and r[0] < rect[1] + gap and rect[2] < r[3] + gap and r[2] < rect[3] + gap
               for r in rects)
