"""Augmentations of the paper: online (per inner step) and task-level (mix-up, channel shuffle).

Batches are dicts {"rgb": (B, 3, H, W) float in [0, 1], "depth": (B, 1, H, W) metres, 0 = missing}.
All randomness comes from an explicit torch.Generator so a meta-training run is reproducible and
independent of whatever else consumes the global RNG.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from .losses import depth_loss

Batch = dict[str, Tensor]


def _uniform(n: int, low: float, high: float, generator: torch.Generator, like: Tensor) -> Tensor:
    """(n, 1, 1, 1) samples drawn on the generator's device, moved to `like`'s device/dtype."""
    u = torch.rand(n, generator=generator, device=generator.device)
    return (low + (high - low) * u).to(device=like.device, dtype=like.dtype).view(n, 1, 1, 1)


def _grayscale(rgb: Tensor) -> Tensor:
    # ITU-R 601 luma, the weights torchvision's ColorJitter uses.
    r, g, b = rgb.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _rgb_to_hsv(rgb: Tensor) -> Tensor:
    r, g, b = rgb.unbind(1)
    maxc, _ = rgb.max(1)
    minc, _ = rgb.min(1)
    delta = maxc - minc
    sat = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    safe_delta = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe_delta, (maxc - g) / safe_delta, (maxc - b) / safe_delta
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(delta > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    return torch.stack([hue, sat, maxc], dim=1)


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    h, s, v = hsv.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # Row k lists (r, g, b) for hue sector k.
    sectors = torch.stack(
        [
            torch.stack([v, t, p], 1),
            torch.stack([q, v, p], 1),
            torch.stack([p, v, t], 1),
            torch.stack([p, q, v], 1),
            torch.stack([t, p, v], 1),
            torch.stack([v, p, q], 1),
        ],
        dim=1,
    )  # (B, 6, 3, H, W)
    index = i.unsqueeze(1).unsqueeze(1).expand(-1, 1, 3, -1, -1)
    return sectors.gather(1, index).squeeze(1)


def color_jitter(
    rgb: Tensor,
    generator: torch.Generator,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    hue: float = 0.05,
) -> Tensor:
    """Per-sample brightness, contrast, saturation, hue jitter with torchvision ColorJitter's semantics.

    Factors are drawn uniformly from [max(0, 1 - x), 1 + x] (hue shift from [-hue, hue]), applied in a
    fixed order (torchvision permutes the order; a per-sample permutation is not worth the complexity),
    clamping to [0, 1] after each op like torchvision.
    """
    n = rgb.shape[0]
    b = _uniform(n, max(0.0, 1 - brightness), 1 + brightness, generator, rgb)
    c = _uniform(n, max(0.0, 1 - contrast), 1 + contrast, generator, rgb)
    s = _uniform(n, max(0.0, 1 - saturation), 1 + saturation, generator, rgb)
    h = _uniform(n, -hue, hue, generator, rgb)

    rgb = (rgb * b).clamp(0, 1)
    mean_gray = _grayscale(rgb).mean(dim=(1, 2, 3), keepdim=True)
    rgb = (c * rgb + (1 - c) * mean_gray).clamp(0, 1)
    rgb = (s * rgb + (1 - s) * _grayscale(rgb)).clamp(0, 1)
    if hue > 0:
        hsv = _rgb_to_hsv(rgb)
        hsv = torch.cat([(hsv[:, :1] + h) % 1.0, hsv[:, 1:]], dim=1)
        rgb = _hsv_to_rgb(hsv).clamp(0, 1)
    return rgb


def online_augment(
    rgb: Tensor,
    depth: Tensor,
    generator: torch.Generator,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    hue: float = 0.05,
    flip_prob: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """The paper's online augmentation: colour jitter (image only) and a left-right flip of the pair.

    Flip and jitter are drawn per sample. Depth is never jittered (it is a measurement, not an
    appearance) but must be flipped with its image to stay aligned.
    """
    flip = torch.rand(rgb.shape[0], generator=generator, device=generator.device) < flip_prob
    flip = flip.to(rgb.device).view(-1, 1, 1, 1)
    rgb = torch.where(flip, rgb.flip(-1), rgb)
    depth = torch.where(flip, depth.flip(-1), depth)
    rgb = color_jitter(rgb, generator, brightness, contrast, saturation, hue)
    return rgb, depth


def online_augment_batch(batch: Batch, generator: torch.Generator, **kwargs: float) -> Batch:
    """`online_augment` on a batch dict: the `inner_augment` callable Reptile expects."""
    rgb, depth = online_augment(batch["rgb"], batch["depth"], generator, **kwargs)
    return {**batch, "rgb": rgb, "depth": depth}


def sample_beta(alpha: float, generator: torch.Generator) -> float:
    """Beta(alpha, alpha) sample driven by a torch.Generator.

    torch.distributions.Beta cannot take a generator, so a seed is drawn from the generator and handed
    to numpy: still fully determined by the generator's state.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup(batch_a: Batch, batch_b: Batch, alpha: float, generator: torch.Generator) -> Batch:
    """Mix-up of two tasks (MetaMix-style): images and depths blended with one lambda ~ Beta(alpha, alpha).

    A single lambda per task pair, as in MetaMix. Depth targets are blended linearly like regression
    labels in MetaMix, but only where BOTH depths are valid: blending a real depth with the 0 that marks
    a missing one would invent a wrong target, so such pixels are marked missing (0) instead.
    """
    if batch_a["rgb"].shape != batch_b["rgb"].shape or batch_a["depth"].shape != batch_b["depth"].shape:
        raise ValueError(
            f"mixup needs equally shaped tasks, got rgb {tuple(batch_a['rgb'].shape)} vs "
            f"{tuple(batch_b['rgb'].shape)}, depth {tuple(batch_a['depth'].shape)} vs "
            f"{tuple(batch_b['depth'].shape)}"
        )
    lam = sample_beta(alpha, generator)
    rgb = lam * batch_a["rgb"] + (1 - lam) * batch_b["rgb"]
    depth_a, depth_b = batch_a["depth"], batch_b["depth"]
    valid = (depth_a > 0) & (depth_b > 0)
    depth = torch.where(valid, lam * depth_a + (1 - lam) * depth_b, torch.zeros_like(depth_a))
    return {"rgb": rgb, "depth": depth}


def channel_shuffle(feat_a: Tensor, feat_b: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Replace a random round(p * C) channels of feat_a (B, C, ...) by the same channels of feat_b.

    MetaMix's Channel Shuffle swaps a block of feature channels between two sources so the learner cannot
    rely on any fixed subset of channels; here the subset is drawn uniformly rather than as MetaMix's
    fixed contiguous "concept" groups, since backbone channels carry no such grouping.
    """
    if feat_a.shape != feat_b.shape:
        raise ValueError(f"channel_shuffle needs equal shapes, got {tuple(feat_a.shape)} vs {tuple(feat_b.shape)}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    num_channels = feat_a.shape[1]
    k = round(p * num_channels)
    idx = torch.randperm(num_channels, generator=generator, device=generator.device)[:k].to(feat_a.device)
    return feat_a.index_copy(1, idx, feat_b.index_select(1, idx))


TaskAugment = Callable[[nn.Module, Batch, Batch, torch.Generator], Tensor]


def _depth_criterion(preds: list[Tensor], batch: Batch) -> Tensor:
    return depth_loss(preds, batch["depth"])


def make_task_augment(
    mix_alpha: float | None = 0.5,
    shuffle_p: float = 0.2,
    criterion: Callable[[list[Tensor], Batch], Tensor] = _depth_criterion,
) -> TaskAugment:
    """The paper's task augmentation as a `Reptile(task_augment=...)` callable, for DepthNet-like models.

    Our reading (the paper gives no formula): the task batch is mixed up with the partner task, then a
    fraction `shuffle_p` of the mixed batch's bottleneck channels is replaced by the partner's own
    bottleneck channels, and the loss is taken against the mixed depth. The partner bottleneck is
    computed without gradient: it is a source of perturbation, not something to fit. Defaults:
    Beta(0.5, 0.5) is MetaMix's choice for its regression (pose) benchmark; shuffle_p=0.2 is close to
    MetaMix's one-of-six concept groups. `mix_alpha=None` / `shuffle_p=0` switch either part off.
    The model must provide `encode(rgb) -> list[Tensor]` and `forward(rgb, bottleneck_fn=...)`;
    `criterion(preds, batch)` is the training loss against the (mixed) batch, the same one the inner steps use.
    """

    def task_augment(model: nn.Module, batch: Batch, partner: Batch, generator: torch.Generator) -> Tensor:
        mixed = mixup(batch, partner, mix_alpha, generator) if mix_alpha else batch
        if shuffle_p <= 0:
            return criterion(model(mixed["rgb"]), mixed)
        with torch.no_grad():
            partner_bottleneck = model.encode(partner["rgb"])[-1]
        preds = model(
            mixed["rgb"], bottleneck_fn=lambda f: channel_shuffle(f, partner_bottleneck, shuffle_p, generator)
        )
        return criterion(preds, mixed)

    return task_augment
