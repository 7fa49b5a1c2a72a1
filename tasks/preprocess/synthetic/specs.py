"""What distinguishes one synthetic 'dataset' from another: the domain specs and the furniture templates.

Each domain stands in for one real dataset (Hypersim, HM3D, Replica, VA/NYUv2) by its room scale, clutter,
palettes, lighting, camera and sensor; training on one and testing on the others is a genuine domain shift.
"""

from __future__ import annotations

from dataclasses import dataclass

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
