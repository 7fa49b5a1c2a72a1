"""Supervised depth loss of the paper: masked MSE + a small second-order smoothness prior.

Paper recipe: `MSE + 0.001 * second-order smoothness`, with the smoothness weight divided by 2.3 at each
coarser scale. Choices the paper leaves open, made here:

* MSE is computed at full gt resolution for every scale (bilinear upsampling of the prediction, as in
  monodepth2's `v1_multiscale=False` path) and averaged over scales, so the term stays a mean squared error
  in m^2 whatever the number of scales.
* Smoothness is computed at each scale's own resolution and summed over scales with weights
  `smooth_weight / scale_decay**s`, as in the paper's released `SmoothLoss`.
* Smoothness acts on depth divided by its per-image mean, so it is scale invariant: the same room shape
  costs the same at 2 m and at 8 m, and its balance against the MSE does not drift with scene depth.
* With an `image`, the second derivatives are down-weighted by exp(-|image gradient|) (edge-aware, as in
  monodepth2) so depth discontinuities at object boundaries are not smoothed away; without one it is the
  paper's plain version.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_mse(pred: Tensor, gt: Tensor) -> Tensor:
    """MSE over pixels with gt > 0 (missing depth is stored as 0).

    Zero (not NaN) when nothing is valid, so an all-invalid crop in a batch cannot poison training; the
    zero still depends on `pred`, which keeps autograd happy.
    """
    if pred.shape[-2:] != gt.shape[-2:]:
        pred = F.interpolate(pred, size=gt.shape[-2:], mode="bilinear", align_corners=False)
    valid = (gt > 0).to(pred.dtype)
    return ((pred - gt) ** 2 * valid).sum() / valid.sum().clamp_min(1.0)


def _mean(t: Tensor) -> Tensor:
    # Maps narrower than 3 pixels have no second differences; they contribute 0, not NaN.
    return t.mean() if t.numel() else t.sum()


def second_order_smoothness(depth: Tensor, image: Tensor | None = None, eps: float = 1e-7) -> Tensor:
    """Mean |second derivatives| of mean-normalised depth (B, 1, H, W); zero for any planar ramp.

    Second order (not first order) so slanted planes such as floors and walls seen at an angle, the
    dominant indoor structure, are not penalised. Terms follow the paper's SmoothLoss: d2/dx2, d2/dy2 and
    both orders of the mixed derivative.
    """
    depth = depth / depth.mean(dim=(1, 2, 3), keepdim=True).clamp_min(eps)
    dx = depth[..., :, 1:] - depth[..., :, :-1]
    dy = depth[..., 1:, :] - depth[..., :-1, :]
    dxx = dx[..., :, 1:] - dx[..., :, :-1]
    dxy = dx[..., 1:, :] - dx[..., :-1, :]
    dyx = dy[..., :, 1:] - dy[..., :, :-1]
    dyy = dy[..., 1:, :] - dy[..., :-1, :]
    if image is None:
        return _mean(dxx.abs()) + _mean(dxy.abs()) + _mean(dyx.abs()) + _mean(dyy.abs())

    if image.shape[-2:] != depth.shape[-2:]:
        image = F.interpolate(image, size=depth.shape[-2:], mode="area")
    ix = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    iy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    # A second difference spans two first differences; the stronger image edge of the two decides.
    wxx = torch.exp(-torch.maximum(ix[..., :, 1:], ix[..., :, :-1]))
    wyy = torch.exp(-torch.maximum(iy[..., 1:, :], iy[..., :-1, :]))
    wxy = torch.exp(-torch.maximum(ix[..., 1:, :], ix[..., :-1, :]))
    wyx = torch.exp(-torch.maximum(iy[..., :, 1:], iy[..., :, :-1]))
    return _mean(dxx.abs() * wxx) + _mean(dxy.abs() * wxy) + _mean(dyx.abs() * wyx) + _mean(dyy.abs() * wyy)


def depth_loss_terms(
    preds: list[Tensor],
    gt: Tensor,
    smooth_weight: float = 1e-3,
    scale_decay: float = 2.3,
    image: Tensor | None = None,
) -> dict[str, Tensor]:
    """Loss and its parts (for logging); `preds[i]` gets smoothness weight smooth_weight / scale_decay**i.

    Decay follows list position (like the paper's SmoothLoss), which equals the scale for DepthNet's
    default scales (0, 1, 2, 3).
    """
    mse = torch.stack([masked_mse(p, gt) for p in preds]).mean()
    smooth = sum(second_order_smoothness(p, image) / scale_decay**i for i, p in enumerate(preds))
    return {"loss": mse + smooth_weight * smooth, "mse": mse, "smooth": smooth}


def depth_loss(
    preds: list[Tensor],
    gt: Tensor,
    smooth_weight: float = 1e-3,
    scale_decay: float = 2.3,
    image: Tensor | None = None,
) -> Tensor:
    """Scalar training loss: scale-averaged masked MSE + smooth_weight * decayed multi-scale smoothness."""
    return depth_loss_terms(preds, gt, smooth_weight, scale_decay, image)["loss"]
