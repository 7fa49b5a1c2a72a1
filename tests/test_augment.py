import math

import pytest
import torch
from torch import nn

from models.augment import (
    _hsv_to_rgb,
    _rgb_to_hsv,
    channel_shuffle,
    make_task_augment,
    mixup,
    online_augment,
    online_augment_batch,
)
from models.losses import depth_loss

NO_JITTER = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}


pytestmark = pytest.mark.usefixtures("single_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def asymmetric_pair(batch: int = 4, h: int = 6, w: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and depth that both increase left to right, so a flip is visible and checkable."""
    ramp = torch.arange(w, dtype=torch.float32) / w
    rgb = ramp.expand(batch, 3, h, w).clone()
    rgb[:, 1] = ramp.flip(0)  # channels differ too, so a channel mix-up would also show
    depth = (1.0 + ramp).expand(batch, 1, h, w).clone()
    return rgb, depth


def test_flip_moves_image_and_depth_together():
    rgb, depth = asymmetric_pair()
    out_rgb, out_depth = online_augment(rgb, depth, gen(), flip_prob=1.0, **NO_JITTER)
    assert torch.allclose(out_rgb, rgb.flip(-1))
    assert torch.equal(out_depth, depth.flip(-1))
    out_rgb, out_depth = online_augment(rgb, depth, gen(), flip_prob=0.0, **NO_JITTER)
    assert torch.allclose(out_rgb, rgb)
    assert torch.equal(out_depth, depth)


def test_flip_is_per_sample_and_consistent_within_each_pair():
    rgb, depth = asymmetric_pair(batch=32)
    out_rgb, out_depth = online_augment(rgb, depth, gen(3), flip_prob=0.5, **NO_JITTER)
    depth_flipped = out_depth[:, 0, 0, 0] > out_depth[:, 0, 0, -1]
    rgb_flipped = out_rgb[:, 0, 0, 0] > out_rgb[:, 0, 0, -1]
    assert torch.equal(depth_flipped, rgb_flipped)
    assert 0 < int(depth_flipped.sum()) < 32


def test_jitter_changes_image_only_per_sample_and_stays_in_range():
    rgb = torch.rand(1, 3, 6, 8).expand(8, 3, 6, 8).contiguous()
    depth = torch.rand(8, 1, 6, 8) + 0.5
    out_rgb, out_depth = online_augment(rgb, depth, gen(), flip_prob=0.0)
    assert torch.equal(out_depth, depth)
    assert not torch.allclose(out_rgb, rgb, atol=1e-3)
    # Identical inputs, different outputs: the jitter is drawn per sample, not once per batch.
    assert not torch.allclose(out_rgb[0], out_rgb[1], atol=1e-3)
    assert out_rgb.min() >= 0.0 and out_rgb.max() <= 1.0


def test_online_augment_is_deterministic_given_the_generator():
    rgb, depth = torch.rand(4, 3, 6, 8), torch.rand(4, 1, 6, 8)
    a = online_augment(rgb, depth, gen(7))
    b = online_augment(rgb, depth, gen(7))
    c = online_augment(rgb, depth, gen(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_online_augment_batch_keeps_other_keys():
    batch = {"rgb": torch.rand(2, 3, 4, 4), "depth": torch.rand(2, 1, 4, 4), "K": torch.eye(3)}
    out = online_augment_batch(batch, gen(), flip_prob=1.0, **NO_JITTER)
    assert torch.equal(out["depth"], batch["depth"].flip(-1))
    assert out["K"] is batch["K"]


def test_hue_rotation_by_hand():
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    hsv = _rgb_to_hsv(red)
    assert torch.allclose(hsv.flatten(), torch.tensor([0.0, 1.0, 1.0]))
    hsv[:, 0] += 1 / 3  # a third of the colour wheel: red -> green
    assert torch.allclose(_hsv_to_rgb(hsv).flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    x = torch.rand(2, 3, 5, 5)
    assert torch.allclose(_hsv_to_rgb(_rgb_to_hsv(x)), x, atol=1e-6)


def test_channel_shuffle_replaces_exactly_round_p_c_channels():
    a, b = torch.zeros(2, 10, 3, 4), torch.ones(2, 10, 3, 4)
    for p in (0.0, 0.25, 0.3, 0.55, 1.0):
        out = channel_shuffle(a, b, p, gen())
        from_b = out.mean(dim=(0, 2, 3))
        assert set(from_b.tolist()) <= {0.0, 1.0}  # whole channels, same for every sample and pixel
        assert int(from_b.sum()) == round(p * 10)
    first = channel_shuffle(a, b, 0.5, gen(1))
    assert torch.equal(first, channel_shuffle(a, b, 0.5, gen(1)))
    assert any(not torch.equal(first, channel_shuffle(a, b, 0.5, gen(s))) for s in range(2, 6))


def test_channel_shuffle_takes_b_values_and_passes_gradients():
    a = torch.randn(2, 6, 2, 2, requires_grad=True)
    b = torch.randn(2, 6, 2, 2, requires_grad=True)
    out = channel_shuffle(a, b, 0.5, gen())
    from_b = [c for c in range(6) if torch.equal(out[:, c], b[:, c])]
    assert len(from_b) == 3
    assert all(torch.equal(out[:, c], a[:, c]) for c in range(6) if c not in from_b)
    out.sum().backward()
    assert a.grad.sum().item() == pytest.approx(2 * 3 * 4) and b.grad.sum().item() == pytest.approx(2 * 3 * 4)
    with pytest.raises(ValueError):
        channel_shuffle(a, b[:, :5], 0.5, gen())


def test_mixup_blends_with_beta_lambda_and_masks_invalid_depth():
    a = {"rgb": torch.ones(2, 3, 4, 4), "depth": torch.full((2, 1, 4, 4), 2.0)}
    b = {"rgb": torch.zeros(2, 3, 4, 4), "depth": torch.full((2, 1, 4, 4), 4.0)}
    a["depth"][0, 0, 0, 0] = 0.0  # missing in a
    b["depth"][1, 0, 1, 1] = 0.0  # missing in b
    out = mixup(a, b, alpha=0.5, generator=gen(5))
    lam = out["rgb"][0, 0, 0, 0].item()
    assert 0.0 < lam < 1.0
    assert torch.allclose(out["rgb"], torch.full_like(out["rgb"], lam))
    expected = torch.full((2, 1, 4, 4), lam * 2.0 + (1 - lam) * 4.0)
    expected[0, 0, 0, 0] = 0.0
    expected[1, 0, 1, 1] = 0.0
    assert torch.allclose(out["depth"], expected)
    assert torch.equal(out["rgb"], mixup(a, b, alpha=0.5, generator=gen(5))["rgb"])


def test_mixup_lambda_follows_beta_distribution():
    a = {"rgb": torch.ones(1, 3, 1, 1), "depth": torch.ones(1, 1, 1, 1)}
    b = {"rgb": torch.zeros(1, 3, 1, 1), "depth": torch.ones(1, 1, 1, 1)}
    g = gen(0)
    lams = torch.tensor([mixup(a, b, 0.5, g)["rgb"][0, 0].item() for _ in range(2000)])
    # Beta(0.5, 0.5): mean 1/2, variance 1/8, U-shaped (mass near the ends).
    assert lams.mean().item() == pytest.approx(0.5, abs=0.03)
    assert lams.var().item() == pytest.approx(1 / 8, abs=0.01)
    assert ((lams < 0.1) | (lams > 0.9)).float().mean().item() > 0.35


class TinyDepthModel(nn.Module):
    """Exposes the DepthNet interface make_task_augment relies on: encode() and bottleneck_fn."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 8, 3, padding=1)
        self.dec = nn.Conv2d(8, 1, 3, padding=1)

    def encode(self, rgb):
        return [torch.tanh(self.enc(rgb))]

    def forward(self, rgb, bottleneck_fn=None):
        feat = self.encode(rgb)[-1]
        if bottleneck_fn is not None:
            feat = bottleneck_fn(feat)
        return [1.0 + torch.sigmoid(self.dec(feat))]


def test_task_augment_uses_mixup_and_partner_bottleneck():
    torch.manual_seed(0)
    model = TinyDepthModel()
    task = {"rgb": torch.rand(2, 3, 6, 8), "depth": torch.rand(2, 1, 6, 8) + 1}
    partner = {"rgb": torch.rand(2, 3, 6, 8), "depth": torch.rand(2, 1, 6, 8) + 1}

    plain = make_task_augment(mix_alpha=None, shuffle_p=0.0)(model, task, partner, gen())
    assert plain.item() == pytest.approx(depth_loss(model(task["rgb"]), task["depth"]).item())

    # shuffle_p = 1: every bottleneck channel comes from the partner.
    full_shuffle = make_task_augment(mix_alpha=None, shuffle_p=1.0)(model, task, partner, gen())
    partner_feat = model.encode(partner["rgb"])[-1]
    expected = depth_loss(model(task["rgb"], bottleneck_fn=lambda f: partner_feat), task["depth"])
    assert full_shuffle.item() == pytest.approx(expected.item())

    mixed = make_task_augment(mix_alpha=0.5, shuffle_p=0.0)(model, task, partner, gen(4))
    mixed_batch = mixup(task, partner, 0.5, gen(4))
    assert mixed.item() == pytest.approx(depth_loss(model(mixed_batch["rgb"]), mixed_batch["depth"]).item())

    both = make_task_augment(mix_alpha=0.5, shuffle_p=0.5)(model, task, partner, gen(4))
    both.backward()
    assert math.isfinite(both.item()) and model.enc.weight.grad.abs().sum() > 0


def test_task_augment_with_depthnet():
    from models.network import DepthNet

    model = DepthNet("test_convnext", decoder_channels=(4, 8, 8, 16, 16))
    task = {"rgb": torch.rand(2, 3, 40, 56), "depth": torch.rand(2, 1, 40, 56) + 1}
    partner = {"rgb": torch.rand(2, 3, 40, 56), "depth": torch.rand(2, 1, 40, 56) + 1}
    loss = make_task_augment(mix_alpha=0.5, shuffle_p=0.25)(model, task, partner, gen())
    loss.backward()
    assert math.isfinite(loss.item())
    assert model.encoder.stem_0.weight.grad.abs().sum() > 0
