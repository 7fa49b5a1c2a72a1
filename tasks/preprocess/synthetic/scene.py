"""A room as the ray caster sees it: axis-aligned boxes, their materials and the lights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.preprocess.synthetic.materials import Materials


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
