"""Math that gives the same bits on every x86-64 CPU (docs/determinism.md).

numpy picks SIMD kernels per CPU at run time, and its float32 exp / sin / power (and float64 exp / log / power on
AVX-512) differ between kernels in the last bit. A last-bit difference of a float32 value can flip a stored uint8
pixel. Here the function runs in float64 and the result is rounded to float32: a float64 last-bit difference changes
the float32 result only when it lies within about 1e-16 of a float32 rounding boundary (roughly 1 in 10^8 values),
and that float32 step would still have to flip an 8-bit pixel.
Basic arithmetic (+ - * / sqrt, min/max, floor) is correctly rounded and needs none of this.
"""

from __future__ import annotations

import numpy as np


def exp32(x: np.ndarray) -> np.ndarray:
    return np.exp(np.asarray(x, np.float64)).astype(np.float32)


def sin32(x: np.ndarray) -> np.ndarray:
    return np.sin(np.asarray(x, np.float64)).astype(np.float32)
