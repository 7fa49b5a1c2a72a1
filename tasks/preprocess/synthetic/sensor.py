"""The camera pipeline that turns linear radiance into an 8-bit image, with each domain's sensor artefacts."""

from __future__ import annotations

import cv2
import numpy as np

from tasks.preprocess.synthetic.specs import DomainSpec

LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # Rec.709 luminance weights
MIN_LUMA = 1e-4  # keeps auto-exposure finite on black frames
EXPOSURE_JITTER = (0.85, 1.15)  # per-frame auto-exposure error
MIN_BLUR_PX = 0.3  # blur below this std (pixels) is skipped


def capture(spec: DomainSpec, radiance: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
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
