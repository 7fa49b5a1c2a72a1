"""Procedural surface patterns: stateless hashed noise and analytically filtered lines, no stored textures.

Pattern functions map (u, v, c1, c2, seed, scale, footprint) to linear RGB: u, v are surface coordinates in
metres, scale the pattern's characteristic size and footprint the pixel's size on the surface (metres).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tasks.preprocess.synthetic.numerics import sin32
from tasks.preprocess.synthetic.specs import Range

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
MASK32 = 0xFFFFFFFF
HASH_MUL_X, HASH_MUL_Y, HASH_MUL_SEED, HASH_MIX = 374761393, 668265263, 1442695041, 1274126177
MIN_FOOTPRINT = 1e-4  # smallest pixel footprint (pattern periods) used by line filtering
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
PANEL_SEAM = 0.02  # seam width of cabinet doors as a fraction of the panel width
FACADE_WINDOW = (0.25, 0.75, 0.3, 0.8)  # window rectangle inside one facade cell (u lo/hi, v lo/hi)
FACADE_STOREY_M = 3.0  # facade storey height


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


PatternFn = Callable[..., np.ndarray]  # see the module docstring for the arguments


def _pattern_plain(u, v, c1, c2, seed, scale, fp):
    return _lerp(c1, c2, PLAIN_MOTTLE * _fbm(u / scale, v / scale, seed, 2))


def _pattern_wood(u, v, c1, c2, seed, scale, fp):
    plank = np.floor(v / scale)
    tone = _hash01(plank, 0, seed)
    # Grain lines run along the plank and wander with low-frequency noise.
    warp = _value_noise(u / WOOD_WARP_M, v / scale * WOOD_GRAIN_LINES, seed)
    grain = 0.5 + 0.5 * sin32(2 * np.pi * (v / scale + WOOD_WARP * warp) * WOOD_GRAIN_LINES)
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
