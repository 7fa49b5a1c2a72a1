"""Materials: per-surface colours and pattern parameters, drawn from a domain's palettes and texture mixes."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from tasks.preprocess.synthetic.specs import DomainSpec, HSVBox, Range, Weights
from tasks.preprocess.synthetic.textures import PATTERN_NAMES, PATTERN_SCALE_M

MATERIAL_SEED_RANGE = 1 << 24  # texture seeds stay small so integer hashing cannot overflow int64
PALETTE_GAMMA = 2.2  # palette colours are display-referred; albedo is linear
DEFAULT_CONTRAST = 0.3  # second colour = base * (1 - contrast) unless a material says otherwise
STRIPE_CONTRAST = 0.5  # wallpaper stripes are subtler than the domain's texture contrast
SWAP_UV_PROB = 0.5  # chance that a floor/top pattern runs along the other axis
GROUT_GREY = (0.2, 0.8)  # tile grout and mortar
# Colour temperature (K) -> linear RGB tint, interpolated per channel.
KELVIN_TINTS = (
    (2700.0, (1.0, 0.72, 0.42)),
    (4000.0, (1.0, 0.86, 0.72)),
    (5500.0, (1.0, 0.96, 0.92)),
    (6500.0, (0.95, 0.97, 1.0)),
    (8000.0, (0.82, 0.88, 1.0)),
)


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


def hsv_colour(rng: np.random.Generator, box: HSVBox) -> np.ndarray:
    """Linear albedo drawn from a display-referred HSV box."""
    h = rng.uniform(box[0], box[1]) % 1.0
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(box[2], box[3]), rng.uniform(box[4], box[5]))
    return _linear(rgb)


def grey(rng: np.random.Generator, value_range: Range) -> np.ndarray:
    """Linear albedo of a neutral grey drawn from a display-referred value range."""
    return _linear((rng.uniform(*value_range),) * 3)


def _linear(rgb: tuple[float, ...]) -> np.ndarray:
    """Display-referred to linear with Python's (libm's) pow: numpy's float64 power differs per CPU kernel."""
    return np.array([float(c) ** PALETTE_GAMMA for c in rgb])


def kelvin_tint(kelvin: float) -> np.ndarray:
    """Linear RGB tint of a light of colour temperature `kelvin`."""
    temps = [k for k, _ in KELVIN_TINTS]
    return np.array([np.interp(kelvin, temps, [t[c] for _, t in KELVIN_TINTS]) for c in range(3)])


def weighted(rng: np.random.Generator, weights: Weights) -> str:
    """A name drawn with the given relative frequencies."""
    p = np.array([w for _, w in weights], dtype=np.float64)
    return weights[int(rng.choice(len(weights), p=p / p.sum()))][0]


class MaterialBuilder:
    """Collects one row per material while a room is drawn; build() turns them into the Materials arrays."""

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
        pattern = weighted(rng, textures)
        base = hsv_colour(rng, hsv)
        contrast = rng.uniform(*spec.texture_contrast)
        second = None
        if pattern in ("tiles", "brick"):
            second = grey(rng, GROUT_GREY)
        elif pattern == "checker":
            second = hsv_colour(rng, hsv)
        elif pattern == "stripes":
            contrast *= STRIPE_CONTRAST
        return self.add(rng, base, pattern, second, contrast)

    def build(self) -> Materials:
        cols = list(zip(*self.rows, strict=True))
        return Materials(base=np.array(cols[0], np.float32), second=np.array(cols[1], np.float32),
                         pattern=np.array(cols[2], np.int64), scale=np.array(cols[3], np.float32),
                         seed=np.array(cols[4], np.int64), swap_uv=np.array(cols[5], bool),
                         emission=np.array(cols[6], np.float32), has_depth=np.array(cols[7], bool))
