"""The camera pipeline that turns linear radiance into an 8-bit image, with each domain's sensor artefacts."""

from __future__ import annotations

import math

import numpy as np

from tasks.preprocess.synthetic.specs import DomainSpec

LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # Rec.709 luminance weights
MIN_LUMA = 1e-4  # keeps auto-exposure finite on black frames
EXPOSURE_JITTER = (0.85, 1.15)  # per-frame auto-exposure error
MIN_BLUR_PX = 0.3  # blur below this std (pixels) is skipped


def capture(spec: DomainSpec, radiance: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Camera pipeline: auto-exposure, white balance, vignetting, blur, noise, gamma, saturation.

    Runs in float64 up to the 8-bit rounding, so the CPU-dependent last bits of the gamma power never reach a pixel
    (docs/determinism.md).
    """
    median_luma = float(np.median(np.einsum("pc,c->p", radiance, LUMA)))
    exposure = rng.uniform(*spec.target_brightness) / max(median_luma, MIN_LUMA)
    white_balance = 1.0 + spec.white_balance_jitter * rng.standard_normal(3)
    gains = exposure * rng.uniform(*EXPOSURE_JITTER) * white_balance
    img = radiance.reshape(height, width, 3).astype(np.float64) * gains
    if spec.vignetting > 0:
        yy, xx = np.ogrid[0:height, 0:width]
        r2 = ((xx - (width - 1) / 2) / (width / 2)) ** 2 + ((yy - (height - 1) / 2) / (height / 2)) ** 2
        img *= (1.0 - spec.vignetting * r2 / 2.0)[..., None]
    sigma = spec.blur_sigma * height
    if sigma >= MIN_BLUR_PX:
        img = gaussian_blur(img, sigma)
    if spec.read_noise > 0 or spec.shot_noise > 0:
        std = np.sqrt(spec.read_noise ** 2 + spec.shot_noise * np.maximum(img, 0.0))
        img = img + std * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.clip(img, 0.0, 1.0) ** (1.0 / spec.gamma)
    luma = np.einsum("hwc,c->hw", img, LUMA.astype(np.float64))[..., None]
    img = np.clip(luma + spec.saturation * (img - luma), 0.0, 1.0)
    return (img * 255.0 + 0.5).astype(np.uint8)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (H, W, C) with OpenCV's kernel size and mirrored border, as plain float64 sums.

    Not cv2.GaussianBlur: its SIMD kernels (SSE4 / AVX2) sum differently, so its float output depends on the CPU.
    """
    radius = (round(8 * sigma + 1) | 1) // 2  # cv2.GaussianBlur's kernel size for float images
    taps = [math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-radius, radius + 1)]
    weights = [t / math.fsum(taps) for t in taps]
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(img, pad, mode="reflect")  # numpy's reflect = OpenCV's BORDER_REFLECT_101
        window = [slice(None)] * img.ndim
        out = np.zeros_like(img)
        for i, w in enumerate(weights):
            window[axis] = slice(i, i + img.shape[axis])
            out += w * padded[tuple(window)]
        img = out
    return img
