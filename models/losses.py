"""Supervised depth loss of the paper: masked MSE + a small second-order smoothness prior.

Paper recipe: `MSE + 0.001 * second-order smoothness`, with the smoothness weight divided by 2.3 at each
coarser scale. Choices the paper leaves open, made here:

* MSE is computed at full gt resolution for every scale (bilinear upsampling of the prediction, as in
  monodepth2's `v1_multiscale=False` path) and averaged over scales, so the term stays a mean squared error
  in m^2 whatever the number of scales.
* Smoothness is computed at each scale's own resolution and summed over scales with weights
  `smooth_weight / scale_decay**s`, as in the paper's released `SmoothLoss`.
* `smoothness="plain"` (the default, the paper's): mean |second derivatives| of the predicted depth map itself.
  `smoothness="edge_aware"` (an option): of depth divided by its per-image mean (scale invariant), with the
  second derivatives down-weighted by exp(-|image gradient|) as in monodepth2, so object boundaries are not
  smoothed away. One choice holds for every term of a training run (inner steps and task augmentation alike).
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


def _second_differences(depth: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """d2/dx2, d2/dxdy, d2/dydx, d2/dy2 as in the paper's SmoothLoss."""
    dx = depth[..., :, 1:] - depth[..., :, :-1]
    dy = depth[..., 1:, :] - depth[..., :-1, :]
    return (dx[..., :, 1:] - dx[..., :, :-1], dx[..., 1:, :] - dx[..., :-1, :],
            dy[..., :, 1:] - dy[..., :, :-1], dy[..., 1:, :] - dy[..., :-1, :])


def second_order_smoothness(depth: Tensor) -> Tensor:
    """The paper's term: mean |second derivatives| of the depth map (B, 1, H, W); zero for any planar ramp.

    Second order (not first order) so slanted planes such as floors and walls seen at an angle, the
    dominant indoor structure, are not penalised.
    """
    return sum(_mean(d.abs()) for d in _second_differences(depth))


def edge_aware_smoothness(depth: Tensor, image: Tensor, eps: float = 1e-7) -> Tensor:
    """Second-order smoothness of mean-normalised depth, discounted at image edges (an option, not the paper's)."""
    depth = depth / depth.mean(dim=(1, 2, 3), keepdim=True).clamp_min(eps)
    dxx, dxy, dyx, dyy = _second_differences(depth)
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
    smoothness: str = "plain",
) -> dict[str, Tensor]:
    """Loss and its parts (for logging); `preds[i]` gets smoothness weight smooth_weight / scale_decay**i.

    Decay follows list position (like the paper's SmoothLoss), which equals the scale for DepthNet's
    default scales (0, 1, 2, 3). `smoothness="edge_aware"` needs the `image`.
    """
    if smoothness not in ("plain", "edge_aware"):
        raise ValueError(f"smoothness must be 'plain' or 'edge_aware', got {smoothness!r}")
    if smoothness == "edge_aware" and image is None:
        raise ValueError("edge_aware smoothness needs the image")
    mse = torch.stack([masked_mse(p, gt) for p in preds]).mean()
    term = second_order_smoothness if smoothness == "plain" else lambda p: edge_aware_smoothness(p, image)
    smooth = sum(term(p) / scale_decay**i for i, p in enumerate(preds))
    return {"loss": mse + smooth_weight * smooth, "mse": mse, "smooth": smooth}


def depth_loss(preds: list[Tensor], gt: Tensor, smooth_weight: float = 1e-3, scale_decay: float = 2.3,
               image: Tensor | None = None, smoothness: str = "plain") -> Tensor:
    """Scalar training loss: scale-averaged masked MSE + smooth_weight * decayed multi-scale smoothness."""
    return depth_loss_terms(preds, gt, smooth_weight, scale_decay, image, smoothness)["loss"]
