"""Whole rooms: the shell and its lamps, then openings and furniture, drawn in one fixed order into a Scene."""

from __future__ import annotations

import numpy as np

from tasks.preprocess.synthetic.draft import CEILING_GREY, LAMP_DROP_M, WALL_FACES, RoomDraft, start_room
from tasks.preprocess.synthetic.furniture import add_furniture, add_rug, add_small_objects, add_wall_shelves
from tasks.preprocess.synthetic.materials import MaterialBuilder, grey, kelvin_tint, weighted
from tasks.preprocess.synthetic.openings import add_doors, add_windows
from tasks.preprocess.synthetic.scene import Scene
from tasks.preprocess.synthetic.sensor import MIN_LUMA
from tasks.preprocess.synthetic.specs import DomainSpec

LAMP_THICKNESS_M = 0.03  # ceiling lamp panel thickness
LAMP_KELVIN_JITTER = 200.0  # std of colour temperature between lamps of one room
LAMP_WALL_MARGIN_M = 0.6  # lamps keep this far from the walls
LAMP_EMISSION = 6.0  # radiance of lamp panels (saturates after exposure)
TEST_ROOM_ALBEDO, TEST_ROOM_AMBIENT = 0.5, 0.3  # grey of empty_room_scene and its ambient light


def build_shell(room: RoomDraft) -> np.ndarray:
    """Floor, wall and ceiling materials (one wall may get an accent); returns the material per room face."""
    spec, rng, mats = room.spec, room.rng, room.mats
    floor = mats.surface(rng, spec, spec.floor_hsv, spec.floor_textures)
    wall = mats.surface(rng, spec, spec.wall_hsv, spec.wall_textures)
    ceiling = mats.add(rng, grey(rng, CEILING_GREY), weighted(rng, spec.ceiling_textures),
                       contrast=rng.uniform(*spec.texture_contrast))
    faces = np.array([wall, wall, floor, ceiling, wall, wall], np.int64)
    if rng.random() < spec.accent_wall_prob:
        faces[rng.choice(WALL_FACES)] = mats.surface(rng, spec, spec.accent_hsv, spec.wall_textures)
    room.floor_material, room.wall_material = floor, wall
    return faces


def add_lamps(room: RoomDraft) -> None:
    """Emissive ceiling panels, each with a point light just below it."""
    spec, rng = room.spec, room.rng
    temperature = room.kelvin
    count = rng.integers(spec.ceiling_lights[0], spec.ceiling_lights[1] + 1)
    lamp = room.mats.add(rng, np.ones(3) * kelvin_tint(temperature), "plain", emission=LAMP_EMISSION)
    for _ in range(count):
        xz = rng.uniform(LAMP_WALL_MARGIN_M, room.size[[0, 2]] - LAMP_WALL_MARGIN_M)
        half = rng.uniform(*spec.lamp_size_m) / 2
        ceiling = room.size[1]
        room.add_box(np.array([xz[0] - half, ceiling - LAMP_THICKNESS_M, xz[1] - half,
                               xz[0] + half, ceiling, xz[1] + half]), lamp)
        kelvin = temperature + rng.normal(0, LAMP_KELVIN_JITTER)
        intensity = rng.uniform(*spec.light_intensity) * kelvin_tint(kelvin)
        room.lights.append((np.array([xz[0], ceiling - LAMP_DROP_M, xz[1]]), intensity))


def build_room(spec: DomainSpec, rng: np.random.Generator) -> Scene:
    """One room of the domain, every element drawn from `rng` in this order."""
    room = start_room(spec, rng)
    room_materials = build_shell(room)
    add_doors(room)
    add_windows(room)
    add_lamps(room)
    for _ in range(rng.integers(spec.large_furniture[0], spec.large_furniture[1] + 1)):
        add_furniture(room, weighted(rng, spec.furniture_kinds))
    add_wall_shelves(room)
    add_small_objects(room)
    if rng.random() < spec.rug_prob:
        add_rug(room)
    light_pos = np.array([p for p, _ in room.lights]).reshape(-1, 3)
    light_rgb = np.array([c for _, c in room.lights]).reshape(-1, 3)
    ambient = rng.uniform(*spec.ambient) * (light_rgb.mean(0) / max(light_rgb.mean(), MIN_LUMA)
                                            if len(light_rgb) else np.ones(3))
    return Scene(
        room=np.concatenate([np.zeros(3), room.size]),
        room_materials=room_materials,
        openings=np.array(room.openings, np.float64).reshape(-1, 5),
        pockets=np.array(room.pockets, np.float64).reshape(-1, 6),
        pocket_materials=np.array(room.pocket_mats, np.int64).reshape(-1, 6),
        pocket_outdoor=np.array(room.pocket_outdoor, bool),
        pocket_light=np.array([p for p, _ in room.pocket_lights]).reshape(-1, 3),
        pocket_light_rgb=np.array([c for _, c in room.pocket_lights]).reshape(-1, 3),
        boxes=np.array(room.boxes, np.float64).reshape(-1, 6),
        box_materials=np.array(room.box_mats, np.int64).reshape(-1, 6),
        obstacles=np.array(room.obstacles, np.float64).reshape(-1, 4),
        materials=room.mats.build(), light_pos=light_pos, light_rgb=light_rgb, ambient_rgb=ambient,
    )


def empty_room_scene(size: tuple[float, float, float], materials_seed: int = 0) -> Scene:
    """A bare grey room without furniture or openings: a scene whose depth can be computed by hand."""
    rng = np.random.default_rng(materials_seed)
    mats = MaterialBuilder()
    grey_material = mats.add(rng, np.full(3, TEST_ROOM_ALBEDO), "plain")
    return Scene(
        room=np.array([0.0, 0.0, 0.0, *size]), room_materials=np.full(6, grey_material, np.int64),
        openings=np.zeros((0, 5)), pockets=np.zeros((0, 6)), pocket_materials=np.zeros((0, 6), np.int64),
        pocket_outdoor=np.zeros(0, bool), pocket_light=np.zeros((0, 3)), pocket_light_rgb=np.zeros((0, 3)),
        boxes=np.zeros((0, 6)), box_materials=np.zeros((0, 6), np.int64),
        obstacles=np.zeros((0, 4)), materials=mats.build(),
        light_pos=np.array([[size[0] / 2, size[1], size[2] / 2]]), light_rgb=np.ones((1, 3)),
        ambient_rgb=np.full(3, TEST_ROOM_AMBIENT),
    )
