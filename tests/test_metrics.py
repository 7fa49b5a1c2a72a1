import math

import numpy as np
import pytest
import torch

from models.metrics import METRIC_NAMES, crop_mask, depth_metrics

GT = np.array([[1.0, 2.0], [4.0, 0.0]])  # the 0 is missing depth
PRED = np.array([[1.0, 4.0], [3.0, 7.0]])
# Valid pairs (gt, pred): (1, 1), (2, 4), (4, 3); ratios max(g/p, p/g): 1, 2, 4/3.
HAND = {
    "abs_rel": (0 + 2 / 2 + 1 / 4) / 3,
    "sq_rel": (0 + 4 / 2 + 1 / 4) / 3,
    "rmse": math.sqrt((0 + 4 + 1) / 3),
    "rmse_log": math.sqrt((math.log(2) ** 2 + math.log(4 / 3) ** 2) / 3),
    "log10": (math.log10(2) + math.log10(4 / 3)) / 3,
    "a1": 1 / 3,
    "a2": 2 / 3,  # 4/3 < 1.5625 but 2 > 1.5625
    "a3": 2 / 3,  # 2 > 1.953
}


def assert_metrics(result: dict, expected: dict, rel: float = 1e-9) -> None:
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, rel=rel, abs=1e-12), name


def test_hand_computed_values_with_invalid_pixel():
    result = depth_metrics(PRED, GT)
    assert_metrics(result, HAND)
    assert result["n_valid"] == 3 and result["n_images"] == 1


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a,
        lambda a: a.astype(np.float32),
        lambda a: torch.from_numpy(a),
        lambda a: torch.from_numpy(a).float()[None],
        lambda a: torch.from_numpy(a)[None, None].requires_grad_(),
    ],
    ids=["numpy64", "numpy32", "torch_hw", "torch_bhw", "torch_b1hw_grad"],
)
def test_numpy_and_torch_inputs_of_any_layout(convert):
    assert_metrics(depth_metrics(convert(PRED), convert(GT)), HAND, rel=1e-6)


def test_depth_caps_exclude_gt_and_clip_predictions():
    gt = np.array([[2.0, 12.0, 5.0, 0.5]])
    pred = np.array([[20.0, 5.0, -1.0, 0.5]])
    result = depth_metrics(pred, gt, min_depth=0.5, max_depth=10.0)
    # gt 12 (>= max) and gt 0.5 (not > min) are excluded; predictions 20 and -1 clip to 10 and 0.5.
    assert result["n_valid"] == 2
    assert result["abs_rel"] == pytest.approx((8 / 2 + 4.5 / 5) / 2)
    assert result["rmse"] == pytest.approx(math.sqrt((64 + 4.5**2) / 2))


def test_batch_metrics_are_means_of_per_image_metrics():
    gt = np.ones((2, 3, 3))
    pred = np.ones((2, 3, 3))
    gt[0, :, :] = 0.0
    gt[0, 0, 0] = 1.0  # image 0: one valid pixel, error 100%
    pred[0, 0, 0] = 2.0
    result = depth_metrics(pred, gt)
    assert result["abs_rel"] == pytest.approx((1.0 + 0.0) / 2)  # pixel pooling would give 1/10
    assert result["a1"] == pytest.approx(0.5)
    assert result["n_valid"] == 1 + 9


def test_images_without_valid_pixels_are_skipped():
    gt = np.stack([np.zeros((2, 2)), GT])
    pred = np.stack([np.ones((2, 2)), PRED])
    result = depth_metrics(pred, gt)
    assert_metrics(result, HAND)
    assert result["n_images"] == 1
    empty = depth_metrics(np.ones((2, 2)), np.zeros((2, 2)))
    assert empty["n_valid"] == 0 and empty["n_images"] == 0
    assert all(math.isnan(empty[name]) for name in METRIC_NAMES)


def test_prediction_resized_to_gt_resolution():
    gt = np.full((1, 1, 8, 12), 2.0)
    pred = torch.full((1, 1, 4, 6), 3.0)  # bilinear upsampling keeps a constant
    result = depth_metrics(pred, gt)
    assert result["n_valid"] == 96
    assert result["abs_rel"] == pytest.approx(0.5)
    ramp = torch.linspace(1, 2, 6).expand(1, 1, 4, 6)
    assert depth_metrics(ramp, gt)["n_valid"] == 96


def test_eigen_crop_and_explicit_crop():
    mask = crop_mask(480, 640, "eigen")
    assert mask.sum() == (471 - 45) * (601 - 41)
    assert mask[45, 41] and mask[470, 600] and not mask[44, 41] and not mask[45, 601] and not mask[471, 100]

    gt = np.full((480, 640), 2.0)
    pred = np.full((480, 640), 8.0)  # wrong outside the crop
    pred[45:471, 41:601] = 2.0
    result = depth_metrics(pred, gt, crop="eigen")
    assert result["n_valid"] == mask.sum()
    assert result["abs_rel"] == 0.0 and result["a1"] == 1.0
    assert depth_metrics(pred, gt)["abs_rel"] > 0.5

    small = crop_mask(4, 4, (0.5, 1.0, 0.0, 0.5))
    assert small.tolist() == [[False] * 4, [False] * 4, [True, True, False, False], [True, True, False, False]]
    gt4 = np.arange(1, 17, dtype=float).reshape(4, 4) / 2  # all inside (min_depth, max_depth)
    assert depth_metrics(gt4 * 2, gt4, crop=(0.5, 1.0, 0.0, 0.5))["n_valid"] == 4
    with pytest.raises(ValueError):
        depth_metrics(gt4, gt4, crop="garg")


def test_median_alignment_per_image():
    gt = np.stack([np.linspace(1, 5, 12).reshape(3, 4), np.linspace(2, 8, 12).reshape(3, 4)])
    pred = np.stack([2.0 * gt[0], 0.25 * gt[1]])  # a different unknown scale per image
    aligned = depth_metrics(pred, gt, align="median")
    assert aligned["abs_rel"] == pytest.approx(0.0, abs=1e-12) and aligned["a1"] == 1.0
    assert depth_metrics(pred, gt)["abs_rel"] > 0.5

    # Hand check: median(gt) / median(pred) = 2 / 1 -> pred [1, 1, 1] becomes [2, 2, 2].
    result = depth_metrics(np.array([[1.0, 1.0, 1.0]]), np.array([[1.0, 2.0, 4.0]]), align="median")
    assert result["abs_rel"] == pytest.approx((1 + 0 + 0.5) / 3)


def test_scale_shift_alignment_is_least_squares_on_depth():
    gt = np.linspace(1, 6, 20).reshape(4, 5)
    pred = (gt - 1.0) / 3.0  # affine, not proportional: median scaling cannot fix it
    assert depth_metrics(pred, gt, align="scale_shift")["rmse"] == pytest.approx(0.0, abs=1e-9)
    assert depth_metrics(pred, gt, align="median")["rmse"] > 0.1

    # Hand check: a constant prediction is least-squares fitted to the mean of gt.
    result = depth_metrics(np.array([[1.0, 1.0, 1.0]]), np.array([[1.0, 2.0, 6.0]]), align="scale_shift")
    assert result["rmse"] == pytest.approx(math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 3))
    with pytest.raises(ValueError):
        depth_metrics(pred, gt, align="mean")
