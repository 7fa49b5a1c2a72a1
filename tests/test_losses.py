import math

import pytest
import torch

from models.losses import depth_loss, depth_loss_terms, edge_aware_smoothness, masked_mse, second_order_smoothness


def grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return ys[None, None], xs[None, None]


def checkerboard(h: int, w: int, amplitude: float = 0.1) -> torch.Tensor:
    ys, xs = grid(h, w)
    return 1.0 + amplitude * (1 - 2 * ((ys + xs) % 2))


def test_mse_by_hand_with_invalid_pixels():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    gt = torch.tensor([[[[1.0, 0.0], [5.0, 2.0]]]])  # the 0 is missing depth
    # Valid errors: 0, (3-5)^2 = 4, (4-2)^2 = 4 -> 8/3. Including the invalid pixel would give 12/4.
    assert masked_mse(pred, gt).item() == pytest.approx(8 / 3)
    assert depth_loss([pred], gt, smooth_weight=0.0).item() == pytest.approx(8 / 3)


def test_mse_upsamples_coarse_scales_and_averages_over_scales():
    gt = torch.full((1, 1, 4, 4), 3.0)
    gt[0, 0, 0, 0] = 0.0
    full = torch.full((1, 1, 4, 4), 2.0)  # error 1 everywhere
    half = torch.full((1, 1, 2, 2), 5.0)  # bilinear upsampling of a constant is that constant: error 4
    terms = depth_loss_terms([full, half], gt, smooth_weight=0.0)
    assert terms["mse"].item() == pytest.approx((1.0 + 4.0) / 2)
    assert terms["loss"].item() == pytest.approx(2.5)


def test_smoothness_zero_for_planar_ramp_positive_for_bumps():
    ys, xs = grid(12, 16)
    ramp = 1.0 + 0.3 * xs + 0.2 * ys  # a slanted plane: first derivatives nonzero, second derivatives 0
    assert second_order_smoothness(ramp).item() == pytest.approx(0.0, abs=1e-6)
    image = torch.rand(1, 3, 12, 16)
    assert edge_aware_smoothness(ramp, image).item() == pytest.approx(0.0, abs=1e-6)

    bumpy = ramp + 0.5 * torch.sin(xs) * torch.cos(ys)
    assert second_order_smoothness(bumpy).item() > 1e-3
    quadratic = 1.0 + 0.01 * xs**2  # curvature alone must be penalised
    assert second_order_smoothness(quadratic).item() > 1e-3


def test_plain_smoothness_acts_on_the_depth_map_itself_edge_aware_is_scale_invariant():
    depth = checkerboard(8, 8) + torch.rand(1, 1, 8, 8)
    # The paper's term: on the depth map in metres, so it scales with the depth.
    assert second_order_smoothness(5.0 * depth).item() == pytest.approx(5.0 * second_order_smoothness(depth).item())
    flat_image = torch.full((1, 3, 8, 8), 0.5)
    assert edge_aware_smoothness(5.0 * depth, flat_image).item() == pytest.approx(
        edge_aware_smoothness(depth, flat_image).item())


def test_smoothness_checkerboard_by_hand():
    # Every second difference of a +-0.1 checkerboard is +-0.4 and there are four terms (xx, xy, yx, yy).
    assert second_order_smoothness(checkerboard(6, 6)).item() == pytest.approx(4 * 0.4, rel=1e-5)


def test_edge_aware_smoothness_discounts_image_edges():
    depth = checkerboard(8, 8)  # mean 1: the normalisation is a no-op
    flat_image = torch.full((1, 3, 8, 8), 0.5)
    edgy_image = checkerboard(8, 8, amplitude=0.5).expand(1, 3, 8, 8) - 0.5
    plain = second_order_smoothness(depth)
    assert edge_aware_smoothness(depth, flat_image).item() == pytest.approx(plain.item())
    assert edge_aware_smoothness(depth, edgy_image).item() < 0.5 * plain.item()


def test_the_loss_uses_the_chosen_smoothness():
    gt, pred = torch.zeros(1, 1, 8, 8), 3.0 * checkerboard(8, 8)  # no valid pixel: smoothness only
    image = torch.rand(1, 3, 8, 8)
    assert depth_loss([pred], gt).item() == pytest.approx(1e-3 * second_order_smoothness(pred).item())
    edge = depth_loss([pred], gt, image=image, smoothness="edge_aware")
    assert edge.item() == pytest.approx(1e-3 * edge_aware_smoothness(pred, image).item())
    with pytest.raises(ValueError, match="needs the image"):
        depth_loss([pred], gt, smoothness="edge_aware")


def test_smoothness_weight_decays_by_2_3_per_scale():
    gt = torch.zeros(1, 1, 8, 8)  # no valid pixel: the loss is smoothness only
    bumpy0, flat0 = checkerboard(8, 8), torch.ones(1, 1, 8, 8)
    bumpy1, flat1 = checkerboard(4, 4), torch.ones(1, 1, 4, 4)
    assert second_order_smoothness(bumpy0).item() == pytest.approx(second_order_smoothness(bumpy1).item())
    at_scale0 = depth_loss([bumpy0, flat1], gt, smooth_weight=1e-3)
    at_scale1 = depth_loss([flat0, bumpy1], gt, smooth_weight=1e-3)
    assert at_scale0.item() == pytest.approx(1e-3 * 1.6)
    assert (at_scale0 / at_scale1).item() == pytest.approx(2.3, rel=1e-5)
    custom = depth_loss([flat0, bumpy1], gt, smooth_weight=1e-3, scale_decay=4.0)
    assert (at_scale0 / custom).item() == pytest.approx(4.0, rel=1e-5)


def test_no_valid_pixels_gives_finite_loss_and_gradients():
    preds = [torch.rand(2, 1, 8, 8, requires_grad=True) + 0.5, torch.rand(2, 1, 4, 4) + 0.5]
    preds[0].retain_grad()
    gt = torch.zeros(2, 1, 8, 8)
    terms = depth_loss_terms(preds, gt, image=torch.rand(2, 3, 8, 8), smoothness="edge_aware")
    assert terms["mse"].item() == 0.0
    assert math.isfinite(terms["loss"].item())
    terms["loss"].backward()
    assert torch.isfinite(preds[0].grad).all()


def test_tiny_maps_without_second_differences_contribute_zero():
    # Coarse scales of small inputs can be 1-2 pixels wide; they must not turn the loss into NaN.
    assert second_order_smoothness(torch.rand(1, 1, 1, 1) + 1).item() == 0.0
    assert edge_aware_smoothness(torch.rand(1, 1, 2, 5) + 1, torch.rand(1, 3, 2, 5)).item() > 0.0
    loss = depth_loss([torch.rand(1, 1, 4, 4) + 1, torch.rand(1, 1, 1, 1) + 1], torch.ones(1, 1, 4, 4))
    assert math.isfinite(loss.item())
