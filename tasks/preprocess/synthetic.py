"""Procedural synthetic indoor RGB-D generator: the embedded default dataset.

No real dataset can be downloaded in this environment, yet the paper's claim is about *zero-shot
cross-dataset* generalisation, so one synthetic dataset is not enough: we need several domains that
differ the way Hypersim, HM3D, Replica and NYUv2/VA differ (room scale, clutter, palettes, lighting,
camera height/FOV and sensor artefacts). Each domain here is one `DomainSpec`; training on one domain
and testing on the others is then a genuine domain shift for a monocular depth network.

Geometry is exact: rays are cast against axis-aligned boxes (the room, the "pocket" boxes seen through
doorways and windows, and furniture), and depth is the planar z of the hit in the camera frame. A room is
drawn from (seed, domain, scene id) and a frame's camera and sensor noise from (seed, domain, index), so a
sample is bit-identical however it is batched, and consecutive frames of one scene share their room.

Conventions: world y is up, the floor is y = 0 and the room spans [0, Lx] x [0, H] x [0, Lz]. The
camera frame is OpenCV's (x right, y down, z forward) and intrinsics put pixel centres at integer
coordinates, so cx = (width - 1) / 2.
"""

from __future__ import annotations

import colorsys
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

Range = tuple[float, float]
IntRange = tuple[int, int]
HSVBox = tuple[float, float, float, float, float, float]  # hue lo, hue hi, sat lo, sat hi, val lo, val hi
Weights = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class DomainSpec:
    """Every statistic that distinguishes one synthetic 'dataset' from another."""

    # --- room layout ---
    room_size_m: Range  # length of each horizontal side of the rectangular floor plan
    ceiling_height_m: Range  # floor-to-ceiling height
    doors: IntRange  # inclusive range of doorways per room; each shows a corridor behind it
    door_width_m: Range  # doorway width (wide values read as open-plan passages)
    windows: IntRange  # inclusive range of windows per room; each shows an outdoor backdrop
    window_width_m: Range  # window width
    window_sill_m: Range  # height of a window's bottom edge above the floor
    corridor_depth_m: Range  # how far the space behind a doorway extends
    outdoor_depth_m: Range  # distance from a window's wall to the outdoor facade / tree line
    large_furniture: IntRange  # inclusive range of large furniture items per room
    furniture_kinds: Weights  # relative frequency of each large furniture kind (keys of FURNITURE)
    furniture_scale: Range  # multiplier on the nominal furniture dimensions
    small_objects: IntRange  # clutter boxes placed on furniture tops and on the floor
    wall_shelves: IntRange  # wall-mounted shelf boards
    rug_prob: float  # chance that a room has a rug
    # --- appearance ---
    wall_hsv: HSVBox  # wall paint colours (hue may exceed 1 and wraps around)
    floor_hsv: HSVBox  # floor colours
    furniture_hsv: HSVBox  # furniture body colours
    accent_hsv: HSVBox  # fabrics, rugs, clutter and accent walls
    wall_textures: Weights  # relative frequency of each wall pattern (keys of PATTERNS)
    floor_textures: Weights  # relative frequency of each floor pattern
    ceiling_textures: Weights  # relative frequency of each ceiling pattern
    furniture_textures: Weights  # relative frequency of each furniture body pattern
    texture_contrast: Range  # how far a pattern's second colour departs from its base colour
    accent_wall_prob: float  # chance that one wall gets its own colour and pattern
    # --- lighting ---
    ambient: Range  # indirect light level, relative to a lamp at 1 m
    ceiling_lights: IntRange  # inclusive range of ceiling lamps
    light_intensity: Range  # lamp intensity
    light_temperature_k: Range  # lamp colour temperature (low = warm, high = cool)
    lamp_size_m: Range  # side length of the emissive ceiling lamp panels
    window_light: float  # daylight intensity entering per square metre of window
    outdoor_brightness: Range  # radiance of outdoor surfaces per unit albedo (windows look bright)
    ao_strength: float  # darkening at floor-wall edges and around furniture feet (fake occlusion)
    # --- camera ---
    hfov_deg: Range  # horizontal field of view
    camera_height_m: Range  # camera height above the floor
    pitch_deg: Range  # camera pitch, positive looks up
    max_roll_deg: float  # largest absolute camera roll
    frames_per_scene: int  # consecutive indices that share one room
    max_depth_m: float  # farther hits are invalid (0), like a sensor's range limit
    # --- sensor ---
    target_brightness: Range  # auto-exposure target for the median pixel (linear intensity)
    white_balance_jitter: float  # std of the per-channel gain error
    gamma: float  # display gamma of the encoded image
    saturation: float  # colour saturation multiplier applied by the camera pipeline
    vignetting: float  # relative brightness loss at the image corners
    blur_sigma: float  # optical blur std as a fraction of the image height
    read_noise: float  # std of signal-independent noise (linear intensity)
    shot_noise: float  # variance of signal-dependent noise per unit intensity


@dataclass(frozen=True)
class FurnitureKind:
    """A furniture template: boxes given as fractions of the piece's width, depth and height."""

    size_m: tuple[float, float, float]  # nominal width (along the wall), depth (away from it), height
    on_wall: bool  # stands with its back against a wall (else free in the room)
    # (a0, a1, b0, b1, y0, y1, role): a along the width, b away from the wall, y up; role picks the material
    parts: tuple[tuple[float, float, float, float, float, float, str], ...]
    has_top: bool = False  # clutter may be placed on top
    full_height: bool = False  # spans floor to ceiling whatever its nominal height


FURNITURE: dict[str, FurnitureKind] = {
    "bed": FurnitureKind((1.6, 2.0, 0.55), True, (
        (0, 1, 0, 1, 0, 0.3, "body"), (0.01, 0.99, 0.04, 1, 0.3, 1, "fabric"),
        (0, 1, 0, 0.04, 0, 1.8, "body"),  # headboard
        (0.06, 0.47, 0.06, 0.25, 1, 1.22, "pillow"), (0.53, 0.94, 0.06, 0.25, 1, 1.22, "pillow"))),
    "sofa": FurnitureKind((2.0, 0.9, 0.85), True, (
        (0, 1, 0, 1, 0, 0.53, "fabric"), (0, 1, 0, 0.25, 0, 1, "fabric"),
        (0, 0.09, 0, 1, 0, 0.7, "fabric"), (0.91, 1, 0, 1, 0, 0.7, "fabric"))),
    "armchair": FurnitureKind((0.85, 0.85, 0.8), False, (
        (0, 1, 0, 1, 0, 0.55, "fabric"), (0, 1, 0, 0.25, 0, 1, "fabric"),
        (0, 0.2, 0, 1, 0, 0.72, "fabric"), (0.8, 1, 0, 1, 0, 0.72, "fabric"))),
    "table": FurnitureKind((1.4, 0.85, 0.75), False, (
        (0, 1, 0, 1, 0.96, 1, "body"),
        (0, 0.035, 0, 0.06, 0, 0.96, "legs"), (0.965, 1, 0, 0.06, 0, 0.96, "legs"),
        (0, 0.035, 0.94, 1, 0, 0.96, "legs"), (0.965, 1, 0.94, 1, 0, 0.96, "legs")), has_top=True),
    "desk": FurnitureKind((1.3, 0.7, 0.74), True, (
        (0, 1, 0, 1, 0.96, 1, "body"), (0, 0.025, 0, 1, 0, 0.96, "body"), (0.975, 1, 0, 1, 0, 0.96, "body"),
        (0.3, 0.7, 0.1, 0.16, 1.13, 1.6, "dark"), (0.48, 0.52, 0.13, 0.2, 1, 1.13, "dark")),  # monitor
        has_top=True),
    "cabinet": FurnitureKind((1.0, 0.5, 0.9), True, ((0, 1, 0, 1, 0, 1, "panels"),), has_top=True),
    "wardrobe": FurnitureKind((1.2, 0.6, 2.0), True, ((0, 1, 0, 1, 0, 1, "panels"),)),
    "bookcase": FurnitureKind((0.9, 0.35, 1.9), True, ((0, 1, 0, 1, 0, 1, "books"),)),
    "counter": FurnitureKind((2.2, 0.6, 0.9), True, (
        (0, 1, 0, 1, 0, 0.97, "panels"), (0, 1, 0, 1.05, 0.97, 1, "countertop"),
        (0, 1, 0, 0.58, 1.6, 2.35, "panels")), has_top=True),  # wall cupboards above
    "tv_stand": FurnitureKind((1.6, 0.45, 0.5), True, (
        (0, 1, 0, 1, 0, 1, "panels"), (0.1, 0.9, 0.33, 0.44, 1.1, 2.5, "dark")), has_top=True),
    "plant": FurnitureKind((0.5, 0.5, 1.2), False, (
        (0.25, 0.75, 0.25, 0.75, 0, 0.3, "pot"), (0, 1, 0, 1, 0.3, 1, "leaves"))),
    "column": FurnitureKind((0.45, 0.45, 1.0), False, ((0, 1, 0, 1, 0, 1, "plaster"),), full_height=True),
}
FRONT_ROLES = ("panels", "books")  # body material everywhere except a patterned face towards the room

# Pattern names usable in DomainSpec texture weights, and the range of their characteristic size (m).
PATTERN_SCALE_M: dict[str, Range] = {
    "plain": (0.8, 2.0),
    "wood": (0.1, 0.22),
    "tiles": (0.3, 0.6),
    "brick": (0.2, 0.3),
    "checker": (0.3, 0.6),
    "stripes": (0.05, 0.2),
    "noise": (0.15, 0.8),
    "books": (0.3, 0.4),
    "panels": (0.4, 0.6),
    "facade": (2.5, 3.5),
    "foliage": (0.4, 1.5),
    "sky": (4.0, 10.0),
}

# --- numerical constants ---
DIR_EPS = 1e-9  # replaces exactly-zero ray components so slab tests never divide by zero
MIN_HIT_DISTANCE = 1e-4  # ignore box hits closer than this along a ray
NEAR_PLANE_M = 1e-3  # box corners closer than this to the camera plane cannot be projected
SCENE_STREAM, FRAME_STREAM = 0, 1  # separate seed streams for rooms and for per-frame draws
MASK32 = 0xFFFFFFFF
HASH_MUL_X, HASH_MUL_Y, HASH_MUL_SEED, HASH_MIX = 374761393, 668265263, 1442695041, 1274126177
MATERIAL_SEED_RANGE = 1 << 24  # texture seeds stay small so integer hashing cannot overflow int64
# --- layout constants ---
WALL_MARGIN_M = 0.3  # openings and furniture keep this far from room corners
DOOR_HEIGHT_M = (2.0, 2.2)  # doorway height range (clipped below the ceiling)
WINDOW_HEIGHT_M = (1.0, 1.8)  # window height range (clipped below the ceiling)
OPENING_TOP_CLEARANCE_M = 0.15  # minimum wall left above a door or window
OPENING_GAP_M = 0.3  # minimum wall between two openings on one wall
CORRIDOR_EXTRA_WIDTH_M = (0.2, 2.0)  # corridor extent beyond each side of its doorway
OUTDOOR_HALF_WIDTH_M = 40.0  # outdoor backdrop extends this far sideways
OUTDOOR_GROUND_DROP_M = (0.0, 8.0)  # outdoor ground below the room floor (upper storeys)
OUTDOOR_TOP_M = (4.0, 20.0)  # height of the facade / tree line above the room floor
DOOR_CLEARANCE_M = 0.9  # floor kept free in front of doorways
FURNITURE_GAP_M = 0.1  # minimum gap between furniture footprints
DIM_JITTER = 0.15  # relative random variation of each furniture dimension
PLACEMENT_TRIES = 25  # rejection-sampling attempts per placed item
SMALL_OBJECT_SIZE_M = (0.08, 0.45)  # footprint side range of clutter boxes
SMALL_OBJECT_HEIGHT_M = (0.05, 0.4)  # height range of clutter boxes
ON_SUPPORT_PROB = 0.7  # share of clutter placed on furniture tops rather than the floor
SHELF_HEIGHT_M = (1.1, 1.9)  # wall shelf board height above the floor
SHELF_WIDTH_M = (0.6, 1.3)  # wall shelf board width
SHELF_DEPTH_M = (0.2, 0.3)  # wall shelf board depth
BOARD_M = 0.03  # thickness of wall shelf boards
CHAIR_SEAT_M = 0.45  # chair seat side and height
CHAIR_BACK_M = 0.45  # chair back height above the seat
CHAIR_BOARD_M = 0.06  # chair seat/back thickness and post side
CHAIR_TUCK_M = 0.15  # how far a chair slides under its table
CHAIR_SKIP_PROB = 0.3  # chance that a table side has no chair
SHELF_CEILING_GAP_M = 0.5  # wall shelves stay this far below the ceiling
RUG_HEIGHT_M = 0.01  # rug thickness (too thin to cast contact shadows)
RUG_SIZE_M = (1.2, 3.0)  # rug side range
LAMP_THICKNESS_M = 0.03  # ceiling lamp panel thickness
LAMP_DROP_M = 0.2  # point light sits this far below its lamp panel (furniture stays below it)
LAMP_KELVIN_JITTER = 200.0  # std of colour temperature between lamps of one room
LAMP_WALL_MARGIN_M = 0.6  # lamps keep this far from the walls
WINDOW_LIGHT_INSET_M = 0.5  # window light source sits this far inside the room
FRAME_WIDTH_M = 0.07  # width of door/window jambs, headers, sills and mullions
FRAME_DEPTH_M = 0.06  # how far frames reach into the wall opening
FRAME_PROTRUDE_M = 0.02  # how far frames stand out from the wall into the room
SILL_DEPTH_M = 0.12  # how far a window sill juts into the room
DOOR_LEAF_PROB = 0.6  # chance that a doorway shows its door swung open
DOOR_LEAF_M = 0.04  # door leaf thickness
# --- camera constants ---
CAMERA_WALL_MARGIN_M = 0.45  # camera keeps this far from walls
CAMERA_FURNITURE_MARGIN_M = 0.3  # camera keeps this far from furniture footprints
CAMERA_TRIES = 40  # rejection-sampling attempts for a camera position
LOOK_MIN_FRACTION = 0.35  # look-at target at least this fraction of the room diagonal away
YAW_JITTER_DEG = 25.0  # random deviation of the view direction from the look-at target
# --- shading constants ---
PALETTE_GAMMA = 2.2  # palette colours are display-referred; albedo is linear
LIGHT_FALLOFF_M = 2.5  # distance at which a lamp's irradiance halves
AMBIENT_BASE, AMBIENT_UP = 0.85, 0.15  # hemisphere ambient: up-facing surfaces get a little more
CORRIDOR_LIGHT = 0.6  # ambient scale behind doorways, which the room's lamps do not reach
LAMP_EMISSION = 6.0  # radiance of lamp panels (saturates after exposure)
DAYLIGHT_K = 6500.0  # colour temperature of window light
AO_RADIUS_M = 0.35  # reach of the edge darkening
CONTACT_RADIUS_M = 0.25  # reach of the darkening around furniture feet
CONTACT_FLOOR_M = 0.02  # hits below this height count as floor for contact darkening
LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # Rec.709 luminance weights
MIN_LUMA = 1e-4  # keeps auto-exposure finite on black frames
EXPOSURE_JITTER = (0.85, 1.15)  # per-frame auto-exposure error
MIN_BLUR_PX = 0.3  # blur below this std (pixels) is skipped
MIN_FOOTPRINT = 1e-4  # smallest pixel footprint (pattern periods) used by line filtering
MIN_COS = 0.2  # caps the footprint growth of surfaces seen at grazing angles
# Colour temperature (K) -> linear RGB tint, interpolated per channel.
KELVIN_TINTS = (
    (2700.0, (1.0, 0.72, 0.42)),
    (4000.0, (1.0, 0.86, 0.72)),
    (5500.0, (1.0, 0.96, 0.92)),
    (6500.0, (0.95, 0.97, 1.0)),
    (8000.0, (0.82, 0.88, 1.0)),
)
# --- texture constants ---
PLAIN_MOTTLE = 0.25  # strength of the low-frequency unevenness of plain paint
WOOD_PLANK_LENGTH_M = 1.2  # plank length along the grain
WOOD_GAP = 0.04  # plank seam width as a fraction of the plank width
WOOD_GRAIN_LINES = 3.0  # grain lines across one plank
WOOD_WARP_M = 0.5  # length over which grain lines wander
WOOD_WARP = 0.6  # how far grain lines wander, in plank widths
WOOD_TONE, WOOD_GRAIN = 0.5, 0.3  # per-plank tone variation and grain strength
GROUT = 0.06  # tile grout width as a fraction of the tile size
TILE_TONE = 0.15  # per-tile brightness variation
BRICK_ASPECT = 0.45  # brick height / brick length
NOISE_GAIN = 2.0  # contrast stretch of fractal noise
BOOK_WIDTH_M = 0.05  # average book spine width
SHELF_BOARD = 0.08  # bookcase board thickness as a fraction of the shelf pitch
BOOK_FILL = (0.45, 0.75)  # fraction of the shelf height filled by a book
BOOK_ALBEDO = 0.7  # brightest book spine albedo
SHELF_BACK = 0.15  # brightness of the bookcase back relative to its body
CLOUD_THRESHOLD, CLOUD_SHARPNESS = 0.45, 3.0  # cloud cover and edge sharpness of the sky noise
TEST_ROOM_ALBEDO, TEST_ROOM_AMBIENT = 0.5, 0.3  # grey of empty_room_scene and its ambient light
PANEL_SEAM = 0.02  # seam width of cabinet doors as a fraction of the panel width
FACADE_WINDOW = (0.25, 0.75, 0.3, 0.8)  # window rectangle inside one facade cell (u lo/hi, v lo/hi)
FACADE_STOREY_M = 3.0  # facade storey height
DEFAULT_CONTRAST = 0.3  # second colour = base * (1 - contrast) unless a material says otherwise
STRIPE_CONTRAST = 0.5  # wallpaper stripes are subtler than the domain's texture contrast
PANEL_CONTRAST = 0.5  # darkness of cabinet door seams
SWAP_UV_PROB = 0.5  # chance that a floor/top pattern runs along the other axis
SMALL_OBJECT_TEXTURES: Weights = (("plain", 3.0), ("noise", 1.0), ("books", 0.5), ("stripes", 0.5))
RUG_TEXTURES: Weights = (("noise", 1.0), ("stripes", 1.0), ("checker", 1.0))
COUNTERTOP_TEXTURES: Weights = (("noise", 1.0), ("plain", 1.0))
# --- fixed colours (display-referred greys, linear RGB pairs of base and second colour) ---
CEILING_GREY = (0.7, 0.95)  # ceiling paint
GROUT_GREY = (0.2, 0.8)  # tile grout and mortar
DOOR_FRAME_GREY = (0.3, 0.9)  # door casings
WINDOW_FRAME_GREY = (0.5, 0.95)  # window frames
DARK_ALBEDO = (0.01, 0.04)  # screens, metal legs and posts (linear)
DARK_LEGS_PROB = 0.5  # chance that table legs are dark metal rather than the table's material
LEAVES_RGB = (np.array([0.03, 0.12, 0.02]), np.array([0.1, 0.3, 0.05]))  # house plants
GRASS_RGB = (np.array([0.1, 0.22, 0.05]), np.array([0.16, 0.3, 0.08]))  # outdoor ground
TREES_RGB = (np.array([0.05, 0.15, 0.03]), np.array([0.15, 0.3, 0.08]))  # outdoor tree line
SKY_RGB = (np.array([0.45, 0.62, 0.9]), np.full(3, 0.95))  # blue sky and clouds
GLASS_RGB = np.array([0.05, 0.08, 0.12])  # facade windows
FACADE_ALBEDO = (0.1, 0.3)  # facade wall brightness (linear)
FACADE_PROB = 0.5  # chance that a window looks onto a building rather than trees
SAME_FLOOR_PROB = 0.5  # chance that a corridor continues the room's floor


DOMAINS: dict[str, DomainSpec] = {
    # Hypersim-like: large, tall, sparsely furnished rooms, bright varied photoreal palettes, big windows.
    "loft": DomainSpec(
        room_size_m=(6.0, 12.0), ceiling_height_m=(2.8, 4.5),
        doors=(0, 2), door_width_m=(0.9, 2.0), windows=(1, 4), window_width_m=(1.5, 3.5),
        window_sill_m=(0.3, 0.9), corridor_depth_m=(2.0, 5.0), outdoor_depth_m=(3.0, 8.0),
        large_furniture=(3, 7),
        furniture_kinds=(("sofa", 2), ("table", 2), ("armchair", 1.5), ("bed", 1), ("cabinet", 1),
                         ("bookcase", 1), ("counter", 1), ("column", 1), ("plant", 1.5), ("tv_stand", 1)),
        furniture_scale=(1.0, 1.3), small_objects=(2, 6), wall_shelves=(0, 1), rug_prob=0.6,
        wall_hsv=(0.0, 1.0, 0.0, 0.3, 0.7, 0.97), floor_hsv=(0.04, 0.12, 0.15, 0.6, 0.3, 0.85),
        furniture_hsv=(0.0, 1.0, 0.1, 0.6, 0.2, 0.9), accent_hsv=(0.0, 1.0, 0.3, 0.8, 0.3, 0.9),
        wall_textures=(("plain", 0.55), ("noise", 0.2), ("brick", 0.15), ("panels", 0.1)),
        floor_textures=(("wood", 0.5), ("noise", 0.3), ("tiles", 0.2)),
        ceiling_textures=(("plain", 0.8), ("wood", 0.2)),
        furniture_textures=(("wood", 0.4), ("plain", 0.4), ("noise", 0.2)),
        texture_contrast=(0.2, 0.45), accent_wall_prob=0.4,
        ambient=(0.3, 0.5), ceiling_lights=(1, 3), light_intensity=(0.8, 1.5),
        light_temperature_k=(2700.0, 4000.0), lamp_size_m=(0.2, 0.4), window_light=0.6,
        outdoor_brightness=(1.5, 3.0), ao_strength=0.35,
        hfov_deg=(58.0, 66.0), camera_height_m=(1.3, 1.8), pitch_deg=(-15.0, 5.0), max_roll_deg=3.0,
        frames_per_scene=8, max_depth_m=15.0,
        target_brightness=(0.18, 0.28), white_balance_jitter=0.03, gamma=2.2, saturation=1.1,
        vignetting=0.1, blur_sigma=0.0, read_noise=0.003, shot_noise=0.0005,
    ),
    # HM3D-like: medium scanned homes, many doorways into other rooms, moderate clutter, mixed textures,
    # reconstruction blur and some noise.
    "apartment": DomainSpec(
        room_size_m=(3.5, 6.0), ceiling_height_m=(2.4, 2.8),
        doors=(1, 3), door_width_m=(0.8, 1.6), windows=(0, 2), window_width_m=(0.8, 1.8),
        window_sill_m=(0.8, 1.1), corridor_depth_m=(1.5, 4.0), outdoor_depth_m=(4.0, 9.0),
        large_furniture=(2, 5),
        furniture_kinds=(("bed", 1.5), ("sofa", 1.5), ("cabinet", 1.5), ("wardrobe", 1), ("table", 1.5),
                         ("counter", 1), ("armchair", 1), ("tv_stand", 1), ("desk", 0.5), ("plant", 0.5)),
        furniture_scale=(0.9, 1.1), small_objects=(3, 8), wall_shelves=(0, 2), rug_prob=0.4,
        wall_hsv=(0.0, 1.0, 0.02, 0.3, 0.55, 0.9), floor_hsv=(0.03, 0.12, 0.2, 0.6, 0.25, 0.7),
        furniture_hsv=(0.02, 0.14, 0.2, 0.7, 0.2, 0.7), accent_hsv=(0.0, 1.0, 0.2, 0.7, 0.25, 0.8),
        wall_textures=(("plain", 0.5), ("stripes", 0.2), ("noise", 0.15), ("tiles", 0.15)),
        floor_textures=(("wood", 0.4), ("tiles", 0.3), ("checker", 0.1), ("noise", 0.2)),
        ceiling_textures=(("plain", 1.0),),
        furniture_textures=(("wood", 0.5), ("plain", 0.3), ("noise", 0.2)),
        texture_contrast=(0.15, 0.4), accent_wall_prob=0.25,
        ambient=(0.2, 0.4), ceiling_lights=(1, 2), light_intensity=(0.8, 1.6),
        light_temperature_k=(2700.0, 5000.0), lamp_size_m=(0.2, 0.35), window_light=0.4,
        outdoor_brightness=(1.5, 3.0), ao_strength=0.4,
        hfov_deg=(70.0, 80.0), camera_height_m=(1.0, 1.6), pitch_deg=(-15.0, 8.0), max_roll_deg=2.0,
        frames_per_scene=6, max_depth_m=12.0,
        target_brightness=(0.15, 0.25), white_balance_jitter=0.06, gamma=2.2, saturation=0.95,
        vignetting=0.2, blur_sigma=0.004, read_noise=0.01, shot_noise=0.002,
    ),
    # Replica-like: small clean rooms, pastel palettes, little clutter, soft uniform light, wide FOV.
    "studio": DomainSpec(
        room_size_m=(3.0, 5.0), ceiling_height_m=(2.5, 3.0),
        doors=(0, 1), door_width_m=(0.8, 1.0), windows=(0, 1), window_width_m=(0.8, 1.5),
        window_sill_m=(0.8, 1.0), corridor_depth_m=(1.5, 3.0), outdoor_depth_m=(4.0, 7.0),
        large_furniture=(1, 3),
        furniture_kinds=(("sofa", 1), ("bed", 1), ("cabinet", 1), ("table", 1), ("armchair", 1),
                         ("bookcase", 0.5), ("plant", 0.5)),
        furniture_scale=(0.85, 1.0), small_objects=(0, 2), wall_shelves=(0, 1), rug_prob=0.3,
        wall_hsv=(0.0, 1.0, 0.08, 0.3, 0.85, 0.98), floor_hsv=(0.07, 0.13, 0.1, 0.35, 0.6, 0.9),
        furniture_hsv=(0.0, 1.0, 0.05, 0.35, 0.7, 0.95), accent_hsv=(0.0, 1.0, 0.2, 0.45, 0.75, 0.95),
        wall_textures=(("plain", 0.9), ("noise", 0.1)),
        floor_textures=(("wood", 0.6), ("plain", 0.4)),
        ceiling_textures=(("plain", 1.0),),
        furniture_textures=(("plain", 0.8), ("wood", 0.2)),
        texture_contrast=(0.05, 0.2), accent_wall_prob=0.15,
        ambient=(0.6, 0.8), ceiling_lights=(1, 2), light_intensity=(0.3, 0.5),
        light_temperature_k=(4500.0, 6000.0), lamp_size_m=(0.3, 0.5), window_light=0.2,
        outdoor_brightness=(1.3, 2.0), ao_strength=0.15,
        hfov_deg=(85.0, 95.0), camera_height_m=(1.2, 1.7), pitch_deg=(-20.0, 10.0), max_roll_deg=5.0,
        frames_per_scene=6, max_depth_m=10.0,
        target_brightness=(0.3, 0.4), white_balance_jitter=0.02, gamma=2.2, saturation=0.9,
        vignetting=0.0, blur_sigma=0.002, read_noise=0.0, shot_noise=0.0,
    ),
    # VA/NYU-like: cluttered offices and work rooms, desks and shelves, cool dim fluorescent light, dark
    # palettes, lower hand-held Kinect-like camera (57 deg FOV) with strong noise and vignetting.
    "office": DomainSpec(
        room_size_m=(4.0, 8.0), ceiling_height_m=(2.5, 3.2),
        doors=(1, 2), door_width_m=(0.8, 1.2), windows=(0, 2), window_width_m=(1.0, 2.5),
        window_sill_m=(0.8, 1.0), corridor_depth_m=(2.0, 5.0), outdoor_depth_m=(2.5, 5.0),
        large_furniture=(4, 9),
        furniture_kinds=(("desk", 3), ("bookcase", 2), ("cabinet", 2), ("table", 1), ("wardrobe", 1),
                         ("armchair", 0.5), ("plant", 0.5)),
        furniture_scale=(0.9, 1.05), small_objects=(8, 20), wall_shelves=(1, 3), rug_prob=0.1,
        wall_hsv=(0.5, 0.65, 0.02, 0.2, 0.4, 0.7), floor_hsv=(0.55, 0.7, 0.05, 0.3, 0.2, 0.45),
        furniture_hsv=(0.0, 0.15, 0.0, 0.3, 0.12, 0.45), accent_hsv=(0.5, 1.1, 0.2, 0.6, 0.2, 0.6),
        wall_textures=(("plain", 0.6), ("noise", 0.3), ("stripes", 0.1)),
        floor_textures=(("noise", 0.7), ("tiles", 0.3)),
        ceiling_textures=(("tiles", 0.8), ("plain", 0.2)),
        furniture_textures=(("plain", 0.5), ("wood", 0.3), ("noise", 0.2)),
        texture_contrast=(0.2, 0.5), accent_wall_prob=0.1,
        ambient=(0.15, 0.3), ceiling_lights=(2, 4), light_intensity=(0.6, 1.0),
        light_temperature_k=(5500.0, 7500.0), lamp_size_m=(0.5, 0.7), window_light=0.3,
        outdoor_brightness=(1.2, 2.0), ao_strength=0.45,
        hfov_deg=(55.0, 59.0), camera_height_m=(0.9, 1.4), pitch_deg=(-20.0, 5.0), max_roll_deg=4.0,
        frames_per_scene=4, max_depth_m=10.0,
        target_brightness=(0.1, 0.16), white_balance_jitter=0.08, gamma=2.0, saturation=0.8,
        vignetting=0.35, blur_sigma=0.003, read_noise=0.02, shot_noise=0.004,
    ),
}


# ----------------------------------------------------------------------------------------------------
# Scene description
# ----------------------------------------------------------------------------------------------------


@dataclass
class Materials:
    """Per-material texture parameters, stored as arrays so shading can gather them per pixel."""

    base: np.ndarray  # (N, 3) linear albedo
    second: np.ndarray  # (N, 3) linear albedo of the pattern's second colour
    pattern: np.ndarray  # (N,) index into PATTERN_NAMES
    scale: np.ndarray  # (N,) characteristic pattern size in metres
    seed: np.ndarray  # (N,) int64 texture hash seed
    swap_uv: np.ndarray  # (N,) bool, rotates the pattern by 90 degrees
    emission: np.ndarray  # (N,) 0 = lit by the scene, > 0 = self-lit radiance per unit albedo
    has_depth: np.ndarray  # (N,) False for sky, whose depth is reported invalid


@dataclass
class Scene:
    """A room made of axis-aligned boxes. Box rows are [x0, y0, z0, x1, y1, z1]; face k = axis*2 + side."""

    room: np.ndarray  # (6,) the room interior
    room_materials: np.ndarray  # (6,) material per room face
    openings: np.ndarray  # (M, 5) wall face, u0, u1, v0, v1 (u along the wall, v = height)
    pockets: np.ndarray  # (M, 6) box behind each opening (corridor or outdoors)
    pocket_materials: np.ndarray  # (M, 6) material per pocket face
    pocket_outdoor: np.ndarray  # (M,) bool, outdoor pockets are self-lit
    pocket_light: np.ndarray  # (M, 3) position of the lamp lighting each corridor
    pocket_light_rgb: np.ndarray  # (M, 3) intensity times colour of that lamp (zero outdoors)
    boxes: np.ndarray  # (K, 6) furniture, clutter, rugs and lamp panels
    box_materials: np.ndarray  # (K, 6) material per box face
    obstacles: np.ndarray  # (J, 4) floor footprints x0, x1, z0, z1 the camera must avoid
    materials: Materials
    light_pos: np.ndarray  # (L, 3)
    light_rgb: np.ndarray  # (L, 3) intensity times colour
    ambient_rgb: np.ndarray  # (3,)


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
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    # Roll turns the image plane axes about the optical axis.
    right, down = (math.cos(roll) * right + math.sin(roll) * down,
                   -math.sin(roll) * right + math.cos(roll) * down)
    fx = width / (2.0 * math.tan(math.radians(hfov_deg) / 2.0))
    return Camera(position=np.asarray(position, dtype=np.float64),
                  rotation=np.stack([right, down, forward], axis=1),
                  fx=fx, fy=fx, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0)


# ----------------------------------------------------------------------------------------------------
# Colours and textures
# ----------------------------------------------------------------------------------------------------


def _hash01(ix: np.ndarray, iy: np.ndarray, seed: np.ndarray | int) -> np.ndarray:
    """Integer lattice hash in [0, 1): stateless, so textures need no stored noise tables."""
    h = (np.asarray(ix, np.int64) * HASH_MUL_X + np.asarray(iy, np.int64) * HASH_MUL_Y
         + np.asarray(seed, np.int64) * HASH_MUL_SEED) & MASK32
    h = ((h ^ (h >> 13)) * HASH_MIX) & MASK32
    h = h ^ (h >> 16)
    return (h * (1.0 / (MASK32 + 1))).astype(np.float32)


def _value_noise(x: np.ndarray, y: np.ndarray, seed: np.ndarray) -> np.ndarray:
    ix, iy = np.floor(x), np.floor(y)
    fx, fy = x - ix, y - iy
    sx, sy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    ix, iy = ix.astype(np.int64), iy.astype(np.int64)
    n00, n10 = _hash01(ix, iy, seed), _hash01(ix + 1, iy, seed)
    n01, n11 = _hash01(ix, iy + 1, seed), _hash01(ix + 1, iy + 1, seed)
    top = n00 + (n10 - n00) * sx
    bottom = n01 + (n11 - n01) * sx
    return top + (bottom - top) * sy


def _fbm(x: np.ndarray, y: np.ndarray, seed: np.ndarray, octaves: int) -> np.ndarray:
    """Fractal noise in [0, 1]: natural-looking unevenness (paint, carpet, concrete, foliage)."""
    total, norm, amp = np.zeros_like(x), 0.0, 1.0
    for octave in range(octaves):
        freq = 2.0 ** octave
        total += amp * _value_noise(x * freq, y * freq, seed + octave)
        norm += amp
        amp *= 0.5
    return total / norm


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a + (b - a) * t[:, None]


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def _stretch(p: np.ndarray) -> np.ndarray:
    return np.clip((p - 0.5) * NOISE_GAIN + 0.5, 0.0, 1.0)


def _coverage(x: np.ndarray, duty: float | np.ndarray, w: np.ndarray) -> np.ndarray:
    """Box-filtered share of a pixel (w pattern periods wide, centred at x) lying on lines [k, k + duty).

    Thin lines (grout, seams) alias into dotted noise at a distance; filtering them analytically over the
    pixel footprint fades them to their average colour instead, without supersampling.
    """
    w = np.maximum(w, MIN_FOOTPRINT)

    def integral(y: np.ndarray) -> np.ndarray:
        return np.floor(y) * duty + np.minimum(_frac(y), duty)

    return (integral(x + w / 2) - integral(x - w / 2)) / w


# Pattern functions: (u, v, c1, c2, seed, scale, footprint) -> linear RGB. u, v are surface coordinates in
# metres, scale the pattern's characteristic size and footprint the pixel's size on the surface (metres).
PatternFn = Callable[..., np.ndarray]


def _pattern_plain(u, v, c1, c2, seed, scale, fp):
    return _lerp(c1, c2, PLAIN_MOTTLE * _fbm(u / scale, v / scale, seed, 2))


def _pattern_wood(u, v, c1, c2, seed, scale, fp):
    plank = np.floor(v / scale)
    tone = _hash01(plank, 0, seed)
    # Grain lines run along the plank and wander with low-frequency noise.
    warp = _value_noise(u / WOOD_WARP_M, v / scale * WOOD_GRAIN_LINES, seed)
    grain = 0.5 + 0.5 * np.sin(2 * np.pi * (v / scale + WOOD_WARP * warp) * WOOD_GRAIN_LINES)
    p = WOOD_TONE * tone + WOOD_GRAIN * grain
    long_seam = _coverage(v / scale, WOOD_GAP, fp / scale)
    end_seam = _coverage(u / WOOD_PLANK_LENGTH_M + tone, WOOD_GAP * scale / WOOD_PLANK_LENGTH_M,
                         fp / WOOD_PLANK_LENGTH_M)
    seam = 1.0 - (1.0 - long_seam) * (1.0 - end_seam)
    return _lerp(c1, c2, p + (1.0 - p) * seam)


def _tiles(cu, cv, c1, c2, seed, w_u, w_v):
    grout = 1.0 - (1.0 - _coverage(cu, GROUT, w_u)) * (1.0 - _coverage(cv, GROUT, w_v))
    tone = 1.0 + TILE_TONE * (_hash01(np.floor(cu), np.floor(cv), seed) - 0.5)
    return _lerp(c1 * tone[:, None], c2, grout)


def _pattern_tiles(u, v, c1, c2, seed, scale, fp):
    return _tiles(u / scale, v / scale, c1, c2, seed, fp / scale, fp / scale)


def _pattern_brick(u, v, c1, c2, seed, scale, fp):
    height = scale * BRICK_ASPECT
    cv = v / height
    return _tiles(u / scale + 0.5 * (np.floor(cv) % 2), cv, c1, c2, seed, fp / scale, fp / height)


def _pattern_checker(u, v, c1, c2, seed, scale, fp):
    su, sv = _coverage(u / scale, 0.5, fp / scale), _coverage(v / scale, 0.5, fp / scale)
    return _lerp(c1, c2, su + sv - 2 * su * sv)  # filtered XOR of two square waves


def _pattern_stripes(u, v, c1, c2, seed, scale, fp):
    return _lerp(c1, c2, _coverage(u / scale, 0.5, fp / scale))


def _pattern_noise(u, v, c1, c2, seed, scale, fp):
    return _lerp(c1, c2, _stretch(_fbm(u / scale, v / scale, seed, 3)))


def _pattern_books(u, v, c1, c2, seed, scale, fp):
    """Bookcase front: rows of coloured spines of random height between shelf boards (c2)."""
    row = np.floor(v / scale)
    book = np.floor(u / BOOK_WIDTH_M + _hash01(row, 1, seed))
    spine = np.stack([_hash01(book, row * 3 + k, seed) for k in range(3)], axis=1)
    fill = BOOK_FILL[0] + (BOOK_FILL[1] - BOOK_FILL[0]) * _hash01(book, row, seed + 1)
    in_row = _frac(v / scale)
    # Squared hashes skew spines towards darker, more saturated colours; above a book is the dark shelf back.
    colour = np.where((in_row > fill)[:, None], SHELF_BACK * c2, spine * spine * BOOK_ALBEDO)
    return _lerp(colour, c2, _coverage(v / scale, SHELF_BOARD, fp / scale))


def _pattern_panels(u, v, c1, c2, seed, scale, fp):
    return _lerp(c1, c2, _coverage(u / scale, PANEL_SEAM, fp / scale))


def _pattern_facade(u, v, c1, c2, seed, scale, fp):
    lo_u, hi_u, lo_v, hi_v = FACADE_WINDOW
    cu, cv = u / scale, v / FACADE_STOREY_M
    window = (_coverage(cu - lo_u, hi_u - lo_u, fp / scale)
              * _coverage(cv - lo_v, hi_v - lo_v, fp / FACADE_STOREY_M))
    lit = 0.5 + 0.5 * _hash01(np.floor(cu), np.floor(cv), seed)
    return _lerp(c1, c2 * lit[:, None], window)


def _pattern_foliage(u, v, c1, c2, seed, scale, fp):
    return _lerp(c1, c2, _stretch(_fbm(u / scale, v / scale, seed, 3)))


def _pattern_sky(u, v, c1, c2, seed, scale, fp):
    clouds = np.clip((_fbm(u / scale, v / scale, seed, 3) - CLOUD_THRESHOLD) * CLOUD_SHARPNESS, 0.0, 1.0)
    return _lerp(c1, c2, clouds)


PATTERNS: dict[str, PatternFn] = {
    "plain": _pattern_plain, "wood": _pattern_wood, "tiles": _pattern_tiles, "brick": _pattern_brick,
    "checker": _pattern_checker, "stripes": _pattern_stripes, "noise": _pattern_noise,
    "books": _pattern_books, "panels": _pattern_panels, "facade": _pattern_facade,
    "foliage": _pattern_foliage, "sky": _pattern_sky,
}
PATTERN_NAMES = tuple(PATTERNS)


def _hsv_colour(rng: np.random.Generator, box: HSVBox) -> np.ndarray:
    """Linear albedo drawn from a display-referred HSV box."""
    h = rng.uniform(box[0], box[1]) % 1.0
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(box[2], box[3]), rng.uniform(box[4], box[5]))
    return np.asarray(rgb) ** PALETTE_GAMMA


def _grey(rng: np.random.Generator, value_range: Range) -> np.ndarray:
    """Linear albedo of a neutral grey drawn from a display-referred value range."""
    return np.full(3, rng.uniform(*value_range)) ** PALETTE_GAMMA


def _kelvin_tint(kelvin: float) -> np.ndarray:
    temps = [k for k, _ in KELVIN_TINTS]
    return np.array([np.interp(kelvin, temps, [t[c] for _, t in KELVIN_TINTS]) for c in range(3)])


def _weighted(rng: np.random.Generator, weights: Weights) -> str:
    p = np.array([w for _, w in weights], dtype=np.float64)
    return weights[int(rng.choice(len(weights), p=p / p.sum()))][0]


class _MaterialBuilder:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, rng: np.random.Generator, base: np.ndarray, pattern: str, second: np.ndarray | None = None,
            contrast: float = DEFAULT_CONTRAST, emission: float = 0.0, has_depth: bool = True) -> int:
        """Adds a material; by default the second colour is a darker shade, which suits most patterns."""
        if second is None:
            second = base * (1.0 - contrast)
        scale = rng.uniform(*PATTERN_SCALE_M[pattern])
        self.rows.append((base, second, PATTERN_NAMES.index(pattern), scale,
                          int(rng.integers(MATERIAL_SEED_RANGE)), bool(rng.random() < SWAP_UV_PROB), emission,
                          has_depth))
        return len(self.rows) - 1

    def surface(self, rng: np.random.Generator, spec: DomainSpec, hsv: HSVBox, textures: Weights) -> int:
        """A surface drawn from a domain palette and texture mix."""
        pattern = _weighted(rng, textures)
        base = _hsv_colour(rng, hsv)
        contrast = rng.uniform(*spec.texture_contrast)
        second = None
        if pattern in ("tiles", "brick"):
            second = _grey(rng, GROUT_GREY)
        elif pattern == "checker":
            second = _hsv_colour(rng, hsv)
        elif pattern == "stripes":
            contrast *= STRIPE_CONTRAST
        return self.add(rng, base, pattern, second, contrast)

    def build(self) -> Materials:
        cols = list(zip(*self.rows, strict=True))
        return Materials(base=np.array(cols[0], np.float32), second=np.array(cols[1], np.float32),
                         pattern=np.array(cols[2], np.int64), scale=np.array(cols[3], np.float32),
                         seed=np.array(cols[4], np.int64), swap_uv=np.array(cols[5], bool),
                         emission=np.array(cols[6], np.float32), has_depth=np.array(cols[7], bool))


# ----------------------------------------------------------------------------------------------------
# Room layout
# ----------------------------------------------------------------------------------------------------

WALL_FACES = (0, 1, 4, 5)  # x = 0, x = Lx, z = 0, z = Lz


@dataclass
class _Anchor:
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


def _wall_anchor(face: int, size: np.ndarray, a_off: float, b_off: float = 0.0) -> _Anchor:
    axis, side = divmod(face, 2)
    a_axis = 2 if axis == 0 else 0
    plane = size[axis] if side else 0.0
    return _Anchor(a_axis, axis, a_off, plane + (-b_off if side else b_off), -1.0 if side else 1.0)


def _wall_length(face: int, size: np.ndarray) -> float:
    return float(size[2] if face // 2 == 0 else size[0])


def _footprint(box: np.ndarray) -> np.ndarray:
    return box[[0, 3, 2, 5]]


def _overlaps(rect: np.ndarray, rects: list[np.ndarray], gap: float) -> bool:
    return any(rect[0] < r[1] + gap and r[0] < rect[1] + gap and rect[2] < r[3] + gap and r[2] < rect[3] + gap
               for r in rects)


class _RoomBuilder:
    """Accumulates boxes, materials and lights for one room."""

    def __init__(self, spec: DomainSpec, rng: np.random.Generator) -> None:
        self.spec, self.rng = spec, rng
        self.mats = _MaterialBuilder()
        side = rng.uniform(*spec.room_size_m, size=2)
        self.size = np.array([side[0], rng.uniform(*spec.ceiling_height_m), side[1]])
        self.boxes: list[np.ndarray] = []
        self.box_mats: list[np.ndarray] = []
        self.occupied: list[np.ndarray] = []  # floor footprints (obstacles and reserved door areas)
        self.obstacles: list[np.ndarray] = []
        self.supports: list[tuple[np.ndarray, float]] = []  # (footprint, top height) for clutter
        self.openings: list[tuple[int, float, float, float, float]] = []
        self.pockets: list[np.ndarray] = []
        self.pocket_mats: list[np.ndarray] = []
        self.pocket_outdoor: list[bool] = []
        self.lights: list[tuple[np.ndarray, np.ndarray]] = []
        self.pocket_lights: list[tuple[np.ndarray, np.ndarray]] = []
        self.kelvin = rng.uniform(*spec.light_temperature_k)  # lamp colour temperature of this home

    # --- helpers ---
    def add_box(self, box: np.ndarray, material: int, front: tuple[int, int] | None = None) -> None:
        mats = np.full(6, material, np.int64)
        if front is not None:
            mats[front[0]] = front[1]
        self.boxes.append(box)
        self.box_mats.append(mats)

    def furniture_material(self) -> int:
        return self.mats.surface(self.rng, self.spec, self.spec.furniture_hsv, self.spec.furniture_textures)

    def accent_material(self, pattern: str = "noise") -> int:
        return self.mats.add(self.rng, _hsv_colour(self.rng, self.spec.accent_hsv), pattern,
                             contrast=self.rng.uniform(*self.spec.texture_contrast))

    def dark_material(self) -> int:
        return self.mats.add(self.rng, np.full(3, self.rng.uniform(*DARK_ALBEDO)), "plain")

    # --- shell ---
    def build_shell(self) -> np.ndarray:
        spec, rng = self.spec, self.rng
        floor = self.mats.surface(rng, spec, spec.floor_hsv, spec.floor_textures)
        wall = self.mats.surface(rng, spec, spec.wall_hsv, spec.wall_textures)
        ceiling = self.mats.add(rng, _grey(rng, CEILING_GREY), _weighted(rng, spec.ceiling_textures),
                                contrast=rng.uniform(*spec.texture_contrast))
        faces = np.array([wall, wall, floor, ceiling, wall, wall], np.int64)
        if rng.random() < spec.accent_wall_prob:
            faces[rng.choice(WALL_FACES)] = self.mats.surface(rng, spec, spec.accent_hsv, spec.wall_textures)
        self.floor_material, self.wall_material = floor, wall
        return faces

    def place_opening(self, width: float, v0: float, v1: float) -> tuple[int, float, float] | None:
        for _ in range(PLACEMENT_TRIES):
            face = int(self.rng.choice(WALL_FACES))
            length = _wall_length(face, self.size)
            w = min(width, length - 2 * WALL_MARGIN_M)
            u0 = self.rng.uniform(WALL_MARGIN_M, length - WALL_MARGIN_M - w)
            clash = any(f == face and u0 < e1 + OPENING_GAP_M and s0 < u0 + w + OPENING_GAP_M
                        for f, s0, e1, _, _ in self.openings)
            if not clash:
                self.openings.append((face, u0, u0 + w, v0, v1))
                return face, u0, u0 + w
        return None

    def pocket_box(self, face: int, u0: float, u1: float, depth: float, y0: float, y1: float) -> np.ndarray:
        """The box behind an opening: shares the opening's wall plane and extends outwards."""
        axis, side = divmod(face, 2)
        u_axis = 2 if axis == 0 else 0
        plane = self.size[axis] if side else 0.0
        box = np.zeros(6)
        box[[axis, axis + 3]] = (plane, plane + depth) if side else (plane - depth, plane)
        box[[u_axis, u_axis + 3]] = u0, u1
        box[[1, 4]] = y0, y1
        return box

    def add_frame(self, face: int, u0: float, u1: float, v0: float, v1: float, material: int,
                  sill: bool) -> None:
        """Jambs and header (and a sill with a mullion for windows) so openings read as doors and windows."""
        box = _wall_anchor(face, self.size, u0).box
        w, f = u1 - u0, FRAME_WIDTH_M
        self.add_box(box(-f, 0, -FRAME_DEPTH_M, FRAME_PROTRUDE_M, v0, v1 + f), material)
        self.add_box(box(w, w + f, -FRAME_DEPTH_M, FRAME_PROTRUDE_M, v0, v1 + f), material)
        self.add_box(box(-f, w + f, -FRAME_DEPTH_M, FRAME_PROTRUDE_M, v1, v1 + f), material)
        if sill:
            self.add_box(box(-f, w + f, -FRAME_DEPTH_M, SILL_DEPTH_M, v0 - f, v0), material)
            self.add_box(box(w / 2 - f / 2, w / 2 + f / 2, -FRAME_DEPTH_M, 0, v0, v1), material)

    def add_doors(self) -> None:
        spec, rng = self.spec, self.rng
        for _ in range(rng.integers(spec.doors[0], spec.doors[1] + 1)):
            top = min(rng.uniform(*DOOR_HEIGHT_M), self.size[1] - OPENING_TOP_CLEARANCE_M)
            placed = self.place_opening(rng.uniform(*spec.door_width_m), 0.0, top)
            if placed is None:
                continue
            face, u0, u1 = placed
            extra = rng.uniform(*CORRIDOR_EXTRA_WIDTH_M, size=2)
            pocket = self.pocket_box(face, u0 - extra[0], u1 + extra[1], rng.uniform(*spec.corridor_depth_m),
                                     0.0, self.size[1])
            self.pockets.append(pocket)
            corridor_floor = self.floor_material if rng.random() < SAME_FLOOR_PROB else self.mats.surface(
                rng, spec, spec.floor_hsv, spec.floor_textures)
            corridor_wall = self.mats.surface(rng, spec, spec.wall_hsv, spec.wall_textures)
            ceiling = self.mats.add(rng, _grey(rng, CEILING_GREY), "plain")
            self.pocket_mats.append(np.array([corridor_wall, corridor_wall, corridor_floor, ceiling,
                                              corridor_wall, corridor_wall], np.int64))
            self.pocket_outdoor.append(False)
            centre = (pocket[:3] + pocket[3:]) / 2
            centre[1] = pocket[4] - LAMP_DROP_M
            intensity = rng.uniform(*spec.light_intensity) * _kelvin_tint(self.kelvin)
            self.pocket_lights.append((centre, intensity))
            frame = self.mats.add(rng, _grey(rng, DOOR_FRAME_GREY), "plain")
            self.add_frame(face, u0, u1, 0.0, top, frame, sill=False)
            anchor = _wall_anchor(face, self.size, u0)
            if rng.random() < DOOR_LEAF_PROB:  # door swung open into the corridor, hinged at one jamb
                hinge = 0.0 if rng.random() < 0.5 else u1 - u0 - DOOR_LEAF_M  # left or right jamb
                self.add_box(anchor.box(hinge, hinge + DOOR_LEAF_M, -(u1 - u0), -FRAME_DEPTH_M, 0, top),
                             self.furniture_material())
            # Keep the doorway walkable so furniture does not block the view into the corridor.
            self.occupied.append(_footprint(anchor.box(0, u1 - u0, 0, DOOR_CLEARANCE_M, 0, 1)))

    def add_windows(self) -> None:
        spec, rng = self.spec, self.rng
        for _ in range(rng.integers(spec.windows[0], spec.windows[1] + 1)):
            sill = rng.uniform(*spec.window_sill_m)
            top = min(sill + rng.uniform(*WINDOW_HEIGHT_M), self.size[1] - OPENING_TOP_CLEARANCE_M)
            placed = self.place_opening(rng.uniform(*spec.window_width_m), sill, top)
            if placed is None:
                continue
            face, u0, u1 = placed
            self.pockets.append(self.pocket_box(face, -OUTDOOR_HALF_WIDTH_M, OUTDOOR_HALF_WIDTH_M,
                                                rng.uniform(*spec.outdoor_depth_m),
                                                -rng.uniform(*OUTDOOR_GROUND_DROP_M),
                                                rng.uniform(*OUTDOOR_TOP_M)))
            glow = rng.uniform(*spec.outdoor_brightness)
            ground = self.mats.add(rng, GRASS_RGB[0], "foliage", second=GRASS_RGB[1], emission=glow)
            if rng.random() < FACADE_PROB:  # a building across the street, else a tree line
                backdrop = self.mats.add(rng, np.full(3, rng.uniform(*FACADE_ALBEDO)), "facade",
                                         second=GLASS_RGB, emission=glow)
            else:
                backdrop = self.mats.add(rng, TREES_RGB[0], "foliage", second=TREES_RGB[1], emission=glow)
            sky = self.mats.add(rng, SKY_RGB[0], "sky", second=SKY_RGB[1], emission=glow, has_depth=False)
            self.pocket_mats.append(np.array([backdrop, backdrop, ground, sky, backdrop, backdrop], np.int64))
            self.pocket_outdoor.append(True)
            self.pocket_lights.append((np.zeros(3), np.zeros(3)))  # outdoor surfaces are self-lit
            frame = self.mats.add(rng, _grey(rng, WINDOW_FRAME_GREY), "plain")
            self.add_frame(face, u0, u1, sill, top, frame, sill=True)
            axis, side = divmod(face, 2)
            centre = np.zeros(3)
            centre[2 if axis == 0 else 0] = (u0 + u1) / 2
            centre[1] = (sill + top) / 2
            centre[axis] = self.size[axis] - WINDOW_LIGHT_INSET_M if side else WINDOW_LIGHT_INSET_M
            area = (u1 - u0) * (top - sill)
            self.lights.append((centre, spec.window_light * area * _kelvin_tint(DAYLIGHT_K)))

    def add_lamps(self) -> None:
        spec, rng = self.spec, self.rng
        temperature = self.kelvin
        count = rng.integers(spec.ceiling_lights[0], spec.ceiling_lights[1] + 1)
        lamp = self.mats.add(rng, np.ones(3) * _kelvin_tint(temperature), "plain", emission=LAMP_EMISSION)
        for _ in range(count):
            xz = rng.uniform(LAMP_WALL_MARGIN_M, self.size[[0, 2]] - LAMP_WALL_MARGIN_M)
            half = rng.uniform(*spec.lamp_size_m) / 2
            ceiling = self.size[1]
            self.add_box(np.array([xz[0] - half, ceiling - LAMP_THICKNESS_M, xz[1] - half,
                                   xz[0] + half, ceiling, xz[1] + half]), lamp)
            kelvin = temperature + rng.normal(0, LAMP_KELVIN_JITTER)
            intensity = rng.uniform(*spec.light_intensity) * _kelvin_tint(kelvin)
            self.lights.append((np.array([xz[0], ceiling - LAMP_DROP_M, xz[1]]), intensity))

    # --- furniture ---
    def try_place(self, width: float, depth: float, on_wall: bool,
                  height: float = 0.0) -> _Anchor | None:
        """Finds a free floor spot; wall pieces avoid windows they would cover."""
        rng = self.rng
        for _ in range(PLACEMENT_TRIES):
            if on_wall:
                face = int(rng.choice(WALL_FACES))
                length = _wall_length(face, self.size)
                if width > length - 2 * WALL_MARGIN_M:
                    continue
                a_off = rng.uniform(WALL_MARGIN_M, length - WALL_MARGIN_M - width)
                anchor = _wall_anchor(face, self.size, a_off)
                blocks_window = any(f == face and a_off < u1 and u0 < a_off + width and height > v0 > 0
                                    for f, u0, u1, v0, _ in self.openings)
                if blocks_window:
                    continue
            else:
                a_axis = int(rng.integers(2)) * 2
                b_axis = 2 - a_axis
                a_len, b_len = self.size[a_axis], self.size[b_axis]
                margin = WALL_MARGIN_M + FURNITURE_GAP_M
                if width > a_len - 2 * margin or depth > b_len - 2 * margin:
                    continue
                anchor = _Anchor(a_axis, b_axis, rng.uniform(margin, a_len - margin - width),
                                 rng.uniform(margin, b_len - margin - depth), 1.0)
            rect = _footprint(anchor.box(0, width, 0, depth, 0, 1))
            if not _overlaps(rect, self.occupied, FURNITURE_GAP_M):
                self.occupied.append(rect)
                self.obstacles.append(rect)
                return anchor
        return None

    def role_material(self, role: str, body: int) -> int:
        """Material for a furniture part role; `body` is the piece's main material."""
        rng, spec = self.rng, self.spec
        base = self.mats.rows[body][0]
        if role == "body":
            return body
        if role == "panels":
            return self.mats.add(rng, base, "panels", contrast=PANEL_CONTRAST)
        if role == "books":
            return self.mats.add(rng, base, "books", second=base)
        if role in ("fabric", "pillow", "pot"):
            return self.accent_material("noise" if role == "fabric" else "plain")
        if role == "legs":
            return self.dark_material() if rng.random() < DARK_LEGS_PROB else body
        if role == "dark":
            return self.dark_material()
        if role == "countertop":
            return self.mats.surface(rng, spec, spec.floor_hsv, COUNTERTOP_TEXTURES)
        if role == "leaves":
            return self.mats.add(rng, LEAVES_RGB[0], "foliage", second=LEAVES_RGB[1])
        if role == "plaster":
            return self.mats.add(rng, self.mats.rows[self.wall_material][0], "plain")
        raise ValueError(f"unknown furniture part role {role!r}")

    def add_furniture(self, name: str) -> None:
        rng, spec = self.rng, self.spec
        kind = FURNITURE[name]
        scale = rng.uniform(*spec.furniture_scale)
        w, d, h = (x * scale * rng.uniform(1 - DIM_JITTER, 1 + DIM_JITTER) for x in kind.size_m)
        ceiling = self.size[1] - LAMP_DROP_M
        if kind.full_height:
            h = self.size[1]
        anchor = self.try_place(w, d, kind.on_wall, min(h, ceiling))
        if anchor is None:
            return
        body = self.furniture_material()
        materials: dict[str, int] = {}
        for a0, a1, b0, b1, y0, y1, role in kind.parts:
            if role not in materials:
                materials[role] = self.role_material(role, body)
            top = y1 * h if kind.full_height else min(y1 * h, ceiling)
            if y0 * h >= top:
                continue  # e.g. wall cupboards that would not fit under a low ceiling
            box = anchor.box(a0 * w, a1 * w, b0 * d, b1 * d, y0 * h, top)
            if role in FRONT_ROLES:
                self.add_box(box, body, (anchor.front_face, materials[role]))
            else:
                self.add_box(box, materials[role])
        if kind.has_top:
            self.supports.append((_footprint(anchor.box(0, w, 0, d, 0, 1)), h))
        if name in ("table", "desk"):
            self.add_chairs(anchor, w, d, kind.on_wall)

    def add_chairs(self, anchor: _Anchor, w: float, d: float, on_wall: bool) -> None:
        """Chairs tucked under the long side(s) of tables and desks (they may overlap the footprint)."""
        rng = self.rng
        seat, board = CHAIR_SEAT_M, CHAIR_BOARD_M
        fabric = self.accent_material("plain")
        for side in (1,) if on_wall else (0, 1):
            if rng.random() < CHAIR_SKIP_PROB:
                continue
            a = rng.uniform(0, max(w - seat, 0))
            b0 = d - CHAIR_TUCK_M if side else CHAIR_TUCK_M - seat
            b1 = b0 + seat
            back = (b1 - board, b1) if side else (b0, b0 + board)
            seat_box = anchor.box(a, a + seat, b0, b1, seat - board, seat)
            self.obstacles.append(_footprint(seat_box))
            self.add_box(seat_box, fabric)
            self.add_box(anchor.box(a, a + seat, back[0], back[1], seat, seat + CHAIR_BACK_M), fabric)
            a_mid, b_mid = a + seat / 2, (b0 + b1) / 2
            post = anchor.box(a_mid - board / 2, a_mid + board / 2, b_mid - board / 2, b_mid + board / 2,
                              0, seat - board)
            self.add_box(post, self.dark_material())

    def add_wall_shelves(self) -> None:
        rng, spec = self.rng, self.spec
        for _ in range(rng.integers(spec.wall_shelves[0], spec.wall_shelves[1] + 1)):
            face = int(rng.choice(WALL_FACES))
            length = _wall_length(face, self.size)
            width = rng.uniform(*SHELF_WIDTH_M)
            if width > length - 2 * WALL_MARGIN_M:
                continue
            a_off = rng.uniform(WALL_MARGIN_M, length - WALL_MARGIN_M - width)
            y = min(rng.uniform(*SHELF_HEIGHT_M), self.size[1] - SHELF_CEILING_GAP_M)
            if any(f == face and a_off < u1 and u0 < a_off + width for f, u0, u1, _, _ in self.openings):
                continue
            anchor = _wall_anchor(face, self.size, a_off)
            depth = rng.uniform(*SHELF_DEPTH_M)
            self.add_box(anchor.box(0, width, 0, depth, y - BOARD_M, y), self.furniture_material())
            self.supports.append((_footprint(anchor.box(0, width, 0, depth, 0, 1)), y))

    def add_small_objects(self) -> None:
        rng, spec = self.rng, self.spec
        for _ in range(rng.integers(spec.small_objects[0], spec.small_objects[1] + 1)):
            sx, sz = rng.uniform(*SMALL_OBJECT_SIZE_M, size=2)
            h = rng.uniform(*SMALL_OBJECT_HEIGHT_M)
            pattern = _weighted(rng, SMALL_OBJECT_TEXTURES)
            material = self.mats.add(rng, _hsv_colour(rng, spec.accent_hsv), pattern,
                                     contrast=rng.uniform(*spec.texture_contrast))
            if self.supports and rng.random() < ON_SUPPORT_PROB:
                rect, top = self.supports[rng.integers(len(self.supports))]
                sx, sz = min(sx, rect[1] - rect[0]), min(sz, rect[3] - rect[2])
                x0, z0 = rng.uniform(rect[0], rect[1] - sx), rng.uniform(rect[2], rect[3] - sz)
                self.add_box(np.array([x0, top, z0, x0 + sx, top + h, z0 + sz]), material)
                continue
            for _ in range(PLACEMENT_TRIES):
                x0, z0 = rng.uniform(FURNITURE_GAP_M, self.size[[0, 2]] - [sx, sz] - FURNITURE_GAP_M)
                rect = np.array([x0, x0 + sx, z0, z0 + sz])
                if not _overlaps(rect, self.occupied, FURNITURE_GAP_M):
                    self.occupied.append(rect)
                    self.obstacles.append(rect)
                    self.add_box(np.array([x0, 0.0, z0, x0 + sx, h, z0 + sz]), material)
                    break

    def add_rug(self) -> None:
        rng = self.rng
        sx, sz = np.minimum(rng.uniform(*RUG_SIZE_M, size=2), self.size[[0, 2]] - 2 * WALL_MARGIN_M)
        x0 = rng.uniform(WALL_MARGIN_M, self.size[0] - WALL_MARGIN_M - sx)
        z0 = rng.uniform(WALL_MARGIN_M, self.size[2] - WALL_MARGIN_M - sz)
        pattern = _weighted(rng, RUG_TEXTURES)
        second = _hsv_colour(rng, self.spec.accent_hsv) if pattern == "checker" else None
        material = self.mats.add(rng, _hsv_colour(rng, self.spec.accent_hsv), pattern, second,
                                 contrast=rng.uniform(*self.spec.texture_contrast))
        self.add_box(np.array([x0, 0.0, z0, x0 + sx, RUG_HEIGHT_M, z0 + sz]), material)

    def build(self) -> Scene:
        spec, rng = self.spec, self.rng
        room_materials = self.build_shell()
        self.add_doors()
        self.add_windows()
        self.add_lamps()
        for _ in range(rng.integers(spec.large_furniture[0], spec.large_furniture[1] + 1)):
            self.add_furniture(_weighted(rng, spec.furniture_kinds))
        self.add_wall_shelves()
        self.add_small_objects()
        if rng.random() < spec.rug_prob:
            self.add_rug()
        light_pos = np.array([p for p, _ in self.lights]).reshape(-1, 3)
        light_rgb = np.array([c for _, c in self.lights]).reshape(-1, 3)
        ambient = rng.uniform(*spec.ambient) * (light_rgb.mean(0) / max(light_rgb.mean(), MIN_LUMA)
                                                if len(light_rgb) else np.ones(3))
        return Scene(
            room=np.concatenate([np.zeros(3), self.size]),
            room_materials=room_materials,
            openings=np.array(self.openings, np.float64).reshape(-1, 5),
            pockets=np.array(self.pockets, np.float64).reshape(-1, 6),
            pocket_materials=np.array(self.pocket_mats, np.int64).reshape(-1, 6),
            pocket_outdoor=np.array(self.pocket_outdoor, bool),
            pocket_light=np.array([p for p, _ in self.pocket_lights]).reshape(-1, 3),
            pocket_light_rgb=np.array([c for _, c in self.pocket_lights]).reshape(-1, 3),
            boxes=np.array(self.boxes, np.float64).reshape(-1, 6),
            box_materials=np.array(self.box_mats, np.int64).reshape(-1, 6),
            obstacles=np.array(self.obstacles, np.float64).reshape(-1, 4),
            materials=self.mats.build(), light_pos=light_pos, light_rgb=light_rgb, ambient_rgb=ambient,
        )


def empty_room_scene(size: tuple[float, float, float], materials_seed: int = 0) -> Scene:
    """A bare grey room without furniture or openings: a scene whose depth can be computed by hand."""
    rng = np.random.default_rng(materials_seed)
    mats = _MaterialBuilder()
    grey = mats.add(rng, np.full(3, TEST_ROOM_ALBEDO), "plain")
    return Scene(
        room=np.array([0.0, 0.0, 0.0, *size]), room_materials=np.full(6, grey, np.int64),
        openings=np.zeros((0, 5)), pockets=np.zeros((0, 6)), pocket_materials=np.zeros((0, 6), np.int64),
        pocket_outdoor=np.zeros(0, bool), pocket_light=np.zeros((0, 3)), pocket_light_rgb=np.zeros((0, 3)),
        boxes=np.zeros((0, 6)), box_materials=np.zeros((0, 6), np.int64),
        obstacles=np.zeros((0, 4)), materials=mats.build(),
        light_pos=np.array([[size[0] / 2, size[1], size[2] / 2]]), light_rgb=np.ones((1, 3)),
        ambient_rgb=np.full(3, TEST_ROOM_AMBIENT),
    )


# ----------------------------------------------------------------------------------------------------
# Ray casting
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Hits:
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


def _trace(scene: Scene, camera: Camera, height: int, width: int) -> _Hits:
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
    return _Hits(t=t, point=(origin + t[:, None] * dirs).astype(np.float32), axis=axis, normal=normal,
                 material=material, region=region, owner=owner,
                 footprint=(t * ray_len / (camera.fx * cos)).astype(np.float32))


def trace_depth(scene: Scene, camera: Camera, height: int, width: int) -> np.ndarray:
    """Planar depth of the scene geometry, without range limits: the ground truth the renderer reports."""
    hits = _trace(scene, camera, height, width)
    return hits.t.reshape(height, width).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# Shading and sensor
# ----------------------------------------------------------------------------------------------------

# Texture coordinates per hit axis: the two world axes spanning the face (u horizontal, v vertical on walls).
U_AXIS = np.array([2, 0, 0])
V_AXIS = np.array([1, 2, 1])


def _albedo(materials: Materials, hits: _Hits) -> np.ndarray:
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


def _occlusion(scene: Scene, hits: _Hits, strength: float) -> np.ndarray:
    """Cheap ambient occlusion: darker near room edges, around furniture feet and at the bottom of boxes."""
    ao = np.ones(len(hits.t), np.float32)
    room = np.flatnonzero(hits.region == REGION_ROOM)
    p = hits.point[room]
    room_box = scene.room.astype(np.float32)
    plane_dist = np.minimum(p - room_box[:3], room_box[3:] - p)
    plane_dist[np.arange(len(room)), hits.axis[room]] = np.inf  # ignore the hit face's own plane
    edge = plane_dist.min(1)
    ao[room] -= strength * np.exp(-edge / AO_RADIUS_M)
    floor = room[p[:, 1] < CONTACT_FLOOR_M]
    if len(floor) and len(scene.obstacles):
        q = hits.point[floor][:, [0, 2]]
        r = scene.obstacles
        dx = np.maximum(np.maximum(r[:, 0] - q[:, :1], q[:, :1] - r[:, 1]), 0.0)
        dz = np.maximum(np.maximum(r[:, 2] - q[:, 1:], q[:, 1:] - r[:, 3]), 0.0)
        near = np.exp(-np.sqrt(dx * dx + dz * dz).min(1) / CONTACT_RADIUS_M)
        ao[floor] *= 1.0 - strength * near
    boxes = np.flatnonzero(hits.region == REGION_BOX)
    ao[boxes] -= strength * np.exp(-hits.point[boxes, 1] / AO_RADIUS_M)
    return np.clip(ao, 0.0, 1.0)


def _lambert(points: np.ndarray, normals: np.ndarray, light_pos: np.ndarray) -> np.ndarray:
    """Cosine-weighted irradiance from point lights with a soft inverse-square falloff."""
    to_light = (light_pos - points).astype(np.float32)
    dist2 = np.einsum("ij,ij->i", to_light, to_light)
    dist = np.sqrt(np.maximum(dist2, MIN_HIT_DISTANCE))
    cos = np.maximum(np.einsum("ij,ij->i", to_light, normals), 0.0) / dist
    return cos / (1.0 + dist2 / LIGHT_FALLOFF_M ** 2)


def _radiance(scene: Scene, hits: _Hits, ao_strength: float) -> np.ndarray:
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
    radiance = albedo * irradiance
    emission = scene.materials.emission[hits.material]
    glowing = np.flatnonzero(emission > 0)
    radiance[glowing] = albedo[glowing] * emission[glowing, None]
    return radiance


def _sensor(spec: DomainSpec, radiance: np.ndarray, rng: np.random.Generator, height: int,
            width: int) -> np.ndarray:
    """Camera pipeline: auto-exposure, white balance, vignetting, blur, noise, gamma, saturation."""
    img = radiance.reshape(height, width, 3)
    median_luma = float(np.median(np.einsum("pc,c->p", radiance, LUMA)))
    exposure = rng.uniform(*spec.target_brightness) / max(median_luma, MIN_LUMA)
    white_balance = 1.0 + spec.white_balance_jitter * rng.standard_normal(3)
    gains = exposure * rng.uniform(*EXPOSURE_JITTER) * white_balance
    img = img * gains.astype(np.float32)
    if spec.vignetting > 0:
        yy, xx = np.ogrid[0:height, 0:width]
        r2 = ((xx - (width - 1) / 2) / (width / 2)) ** 2 + ((yy - (height - 1) / 2) / (height / 2)) ** 2
        img *= (1.0 - spec.vignetting * r2 / 2.0).astype(np.float32)[..., None]
    sigma = spec.blur_sigma * height
    if sigma >= MIN_BLUR_PX:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    if spec.read_noise > 0 or spec.shot_noise > 0:
        std = np.sqrt(spec.read_noise ** 2 + spec.shot_noise * np.maximum(img, 0.0))
        img = img + std * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.clip(img, 0.0, 1.0) ** (1.0 / spec.gamma)
    luma = np.einsum("hwc,c->hw", img, LUMA)[..., None]
    img = np.clip(luma + spec.saturation * (img - luma), 0.0, 1.0)
    return (img * 255.0 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------
# Sampling and public API
# ----------------------------------------------------------------------------------------------------


def _domain_spec(domain: str) -> DomainSpec:
    if domain not in DOMAINS:
        raise ValueError(f"unknown synthetic domain {domain!r}; valid domains: {sorted(DOMAINS)}")
    return DOMAINS[domain]


def _rng(seed: int, domain: str, stream: int, index: int) -> np.random.Generator:
    """Stable per-(seed, domain, index) generator: crc32 instead of hash(), which is salted per process."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(domain.encode()), stream, index]))


def build_scene(domain: str, seed: int, scene: int) -> Scene:
    """The room shared by all frames of one scene id."""
    return _RoomBuilder(_domain_spec(domain), _rng(seed, domain, SCENE_STREAM, scene)).build()


def _sample_camera(spec: DomainSpec, scene: Scene, rng: np.random.Generator, height: int,
                   width: int) -> Camera:
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


def sample_view(domain: str, index: int, seed: int, height: int, width: int) -> tuple[Scene, Camera]:
    """The room and camera of sample `index`; exposed so tests can check the rendered depth against them."""
    spec = _domain_spec(domain)
    scene = build_scene(domain, seed, index // spec.frames_per_scene)
    return scene, _sample_camera(spec, scene, _rng(seed, domain, FRAME_STREAM, index), height, width)


def _render(spec: DomainSpec, scene: Scene, camera: Camera, rng: np.random.Generator, height: int,
            width: int) -> tuple[np.ndarray, np.ndarray]:
    hits = _trace(scene, camera, height, width)
    rgb = _sensor(spec, _radiance(scene, hits, spec.ao_strength), rng, height, width)
    valid = scene.materials.has_depth[hits.material] & (hits.t <= spec.max_depth_m)
    depth = np.where(valid, hits.t, 0.0).astype(np.float32).reshape(height, width)
    return rgb, depth


def render_batch(domain: str, indices: np.ndarray, seed: int, height: int,
                 width: int) -> dict[str, np.ndarray]:
    """Renders the given sample indices of a domain.

    Returns {'rgb': (B,H,W,3) uint8 RGB, 'depth': (B,H,W) float32 metres planar (z) depth with 0 = invalid,
    'intrinsics': (B,4) float32 fx, fy, cx, cy in pixels at (height, width), 'scene': (B,) int64 scene id}.
    Each sample depends only on (domain, seed, index), so batching never changes the data.
    """
    spec = _domain_spec(domain)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    batch = len(indices)
    out = {
        "rgb": np.empty((batch, height, width, 3), np.uint8),
        "depth": np.empty((batch, height, width), np.float32),
        "intrinsics": np.empty((batch, 4), np.float32),
        "scene": indices // spec.frames_per_scene,
    }
    rooms: dict[int, Scene] = {}  # consecutive frames usually share a room: build it once per batch
    for b, index in enumerate(indices.tolist()):
        scene_id = index // spec.frames_per_scene
        if scene_id not in rooms:
            rooms[scene_id] = build_scene(domain, seed, scene_id)
        rng = _rng(seed, domain, FRAME_STREAM, index)
        camera = _sample_camera(spec, rooms[scene_id], rng, height, width)
        out["rgb"][b], out["depth"][b] = _render(spec, rooms[scene_id], camera, rng, height, width)
        out["intrinsics"][b] = camera.intrinsics
    return out


def generate(domain: str, n: int, seed: int, height: int, width: int,
             batch_size: int = 64) -> Iterator[dict[str, np.ndarray]]:
    """Streams samples 0..n-1 in order, one render_batch at a time, so memory is bounded by batch_size.

    Arguments are checked here rather than on the first next(), so a bad domain fails where it is named.
    """
    _domain_spec(domain)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, n, batch_size):
            yield render_batch(domain, np.arange(start, min(start + batch_size, n)), seed, height, width)

    return batches()
