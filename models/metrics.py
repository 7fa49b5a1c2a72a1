"""Standard single-image depth metrics (monodepth2's compute_errors plus log10), per image then averaged.

Protocol, in order, for every image:
1. the prediction is resized (bilinear) to the gt resolution if it differs;
2. valid pixels: min_depth < gt < max_depth, inside the crop if one is given;
3. optional per-image alignment of the prediction on the valid pixels ("median" scaling as in
   monodepth2's self-supervised evaluation, or least-squares "scale_shift" on depth as in MiDaS);
4. the prediction is clipped to [min_depth, max_depth];
5. the eight metrics are computed on the valid pixels.
Images without a single valid pixel are skipped (they carry no information, and including them would
need an arbitrary value); "n_images" says how many were used. If none is, every metric is NaN.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = np.ndarray | torch.Tensor

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "a1", "a2", "a3")

# NYUv2 Eigen crop at 480x640: rows 45..471, cols 41..601, as fractions so it applies at any resolution.
EIGEN_CROP = (45 / 480, 471 / 480, 41 / 640, 601 / 640)


def _as_batch(x: ArrayLike) -> torch.Tensor:
    """(H, W), (B, H, W) or (B, 1, H, W) numpy/torch -> (B, 1, H, W) float64 CPU tensor."""
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    t = t.to(torch.float64)
    if t.ndim == 2:
        t = t[None]
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4 or t.shape[1] != 1:
        raise ValueError(f"expected (H, W), (B, H, W) or (B, 1, H, W), got shape {tuple(t.shape)}")
    return t


def crop_mask(height: int, width: int, crop: str | tuple[float, float, float, float] | None) -> np.ndarray:
    """Boolean (H, W) mask of the evaluation crop; `crop` is "eigen" or (top, bottom, left, right) fractions."""
    mask = np.ones((height, width), dtype=bool)
    if crop is None:
        return mask
    if crop == "eigen":
        crop = EIGEN_CROP
    if isinstance(crop, str) or len(crop) != 4:
        raise ValueError(f"crop must be None, 'eigen' or (top, bottom, left, right) fractions, got {crop!r}")
    top, bottom, left, right = crop
    inside = np.zeros_like(mask)
    inside[round(top * height) : round(bottom * height), round(left * width) : round(right * width)] = True
    return inside


def _align(pred: np.ndarray, gt: np.ndarray, align: str | None) -> np.ndarray:
    if align is None:
        return pred
    if align == "median":
        return pred * (np.median(gt) / np.median(pred))
    if align == "scale_shift":
        design = np.stack([pred, np.ones_like(pred)], axis=1)
        (scale, shift), *_ = np.linalg.lstsq(design, gt, rcond=None)
        return scale * pred + shift
    raise ValueError(f"align must be None, 'median' or 'scale_shift', got {align!r}")


def compute_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The eight metrics on matching 1-D arrays of valid, positive depths."""
    thresh = np.maximum(gt / pred, pred / gt)
    return {
        "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
        "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "log10": float(np.mean(np.abs(np.log10(gt) - np.log10(pred)))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25**2)),
        "a3": float(np.mean(thresh < 1.25**3)),
    }


def depth_metrics(
    pred: ArrayLike,
    gt: ArrayLike,
    *,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    crop: str | tuple[float, float, float, float] | None = None,
    align: str | None = None,
) -> dict[str, float]:
    """Mean over images of the per-image metrics, plus "n_valid" (pixels) and "n_images" (images used)."""
    pred_t, gt_t = _as_batch(pred), _as_batch(gt)
    if pred_t.shape[0] != gt_t.shape[0]:
        raise ValueError(f"batch sizes differ: pred {pred_t.shape[0]}, gt {gt_t.shape[0]}")
    if pred_t.shape[-2:] != gt_t.shape[-2:]:
        pred_t = F.interpolate(pred_t, size=gt_t.shape[-2:], mode="bilinear", align_corners=False)
    preds, gts = pred_t[:, 0].numpy(), gt_t[:, 0].numpy()
    region = crop_mask(*gts.shape[-2:], crop)

    per_image, n_valid = [], 0
    for p, g in zip(preds, gts, strict=True):
        valid = region & (g > min_depth) & (g < max_depth)
        if not valid.any():
            continue
        p_valid = np.clip(_align(p[valid], g[valid], align), min_depth, max_depth)
        per_image.append(compute_errors(g[valid], p_valid))
        n_valid += int(valid.sum())

    result = {
        name: float(np.mean([m[name] for m in per_image])) if per_image else float("nan") for name in METRIC_NAMES
    }
    result["n_valid"] = n_valid
    result["n_images"] = len(per_image)
    return result
