"""Readers of the real datasets' official on-disk formats, on fixtures written here in those formats.

Every fixture has known content that exposes the classic mistakes: non-square frames whose rows and columns carry
different ramps (transposes, flips), pure colours (BGR/RGB swaps), depth values that reveal a wrong scale, and
Hypersim distances whose planar depth is a known plane (radial vs planar).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest

from tasks.io import MetadepthError
from tasks.readers import READERS, make_reader
from tasks.readers.base import check_frame
from tasks.readers.geometry import fit_to_resolution, map_box, radial_to_planar
from tasks.readers.hypersim import tonemap
from tasks.readers.nyu import EIGEN_CROP, NYU_INTRINSICS

NYU_H, NYU_W = 480, 640
MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."


# ---------------------------------------------------------------- fixtures in the official formats


def nyu_frames(n: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB: R = row ramp, G = column ramp, B = frame id; depth: rows and columns change it at different rates."""
    y, x = np.mgrid[:NYU_H, :NYU_W]
    rgb = np.zeros((n, NYU_H, NYU_W, 3), np.uint8)
    rgb[..., 0] = (y * 255 // (NYU_H - 1)).astype(np.uint8)
    rgb[..., 1] = (x * 255 // (NYU_W - 1)).astype(np.uint8)
    rgb[..., 2] = (np.arange(n) * 40)[:, None, None]
    depth = (1.0 + 0.01 * y + 0.001 * x)[None] + 0.1 * np.arange(n)[:, None, None]
    return rgb, depth.astype(np.float32)


def write_nyu(folder: Path, n: int = 6, *, rgb: np.ndarray | None = None, depth: np.ndarray | None = None,
              images_key: str = "images", split: str | None = "mat") -> Path:
    """nyu_depth_v2_labeled.mat as MATLAB v7.3 writes it: HDF5 after a 512-byte user block holding the MATLAB header,
    arrays with reversed axes (images (N, 3, W, H), depths (N, W, H)) and scenes as references to char arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    if rgb is None or depth is None:
        rgb, depth = nyu_frames(n)
    mat = folder / "nyu_depth_v2_labeled.mat"
    with h5py.File(mat, "w", userblock_size=512) as f:
        f.create_dataset(images_key, data=rgb.transpose(0, 3, 2, 1) if rgb.ndim == 4 else rgb)
        f.create_dataset("depths", data=depth.transpose(0, 2, 1) if depth.ndim == 3 else depth)
        refs = f.create_group("#refs#")
        scenes = f.create_dataset("scenes", (1, len(rgb)), dtype=h5py.ref_dtype)
        for i in range(len(rgb)):
            name = f"kitchen_{i // 2:04d}"
            scenes[0, i] = refs.create_dataset(f"s{i}", data=np.array([ord(c) for c in name], np.uint16)[:, None]).ref
    with open(mat, "r+b") as fh:
        fh.write(MATLAB_HEADER.ljust(116) + b"\0" * 8 + b"\x00\x02IM")
    if split == "mat":  # the official splits.mat is an old-style v5 file
        from scipy.io import savemat

        savemat(folder / "splits.mat", {"trainNdxs": np.array([[1], [2], [3], [5]], np.float64),
                                        "testNdxs": np.array([[4], [6]], np.float64)})
    return mat


def write_hypersim(root: Path, h: int = 24, w: int = 30, frames: int = 2, csv: bool = True) -> dict:
    """Three scenes with the real folder and file names; depth_meters is the radial distance of a known plane."""
    f = w / 2 / math.tan(math.pi / 6)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    v, u = np.mgrid[:h, :w]
    planar = 2.0 + 0.05 * v  # rows carry the slope: a transpose changes it
    distance = planar * np.sqrt(1 + ((u - cx) / f) ** 2 + ((v - cy) / f) ** 2)
    distance[h - 1, w - 1] = np.nan  # sky: invalid, not an error
    hdr = np.full((h, w, 3), 0.5, np.float16)
    hdr[2, 7] = (0.5, 0.0, 0.0)  # one pure red pixel off the diagonal
    entity = np.zeros((h, w), np.int32) + 3
    entity[h - 1, w - 1] = -1
    rows = []
    for s, part in zip(["ai_001_001", "ai_001_002", "ai_001_003"], ["train", "val", "test"], strict=True):
        final = root / s / "images" / "scene_cam_00_final_hdf5"
        geometry = root / s / "images" / "scene_cam_00_geometry_hdf5"
        final.mkdir(parents=True)
        geometry.mkdir(parents=True)
        for i in range(frames):
            with h5py.File(final / f"frame.{i:04d}.color.hdf5", "w") as fh:
                fh.create_dataset("dataset", data=hdr)
            with h5py.File(geometry / f"frame.{i:04d}.depth_meters.hdf5", "w") as fh:
                fh.create_dataset("dataset", data=distance.astype(np.float16))
            with h5py.File(geometry / f"frame.{i:04d}.render_entity_id.hdf5", "w") as fh:
                fh.create_dataset("dataset", data=entity)
            rows.append({"scene_name": s, "camera_name": "cam_00", "frame_id": i,
                         "included_in_public_release": not (s == "ai_001_001" and i == 1),
                         "exclude_reason": "" if i == 0 else "bad_frame", "split_partition_name": part})
    if csv:
        pd.DataFrame(rows).to_csv(root / "metadata_images_split_scene_v1.csv", index=False)
    return {"planar": planar, "f": f}


def rendered_frame(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[:h, :w]
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 1] = (y * 8).astype(np.uint8)  # rows in green
    rgb[..., 2] = (x * 4).astype(np.uint8)  # columns in blue
    rgb[:3, :3] = (255, 0, 0)  # pure red top-left corner
    depth = 1.0 + 0.1 * y + 0.01 * x
    return rgb, depth.astype(np.float32)


def write_rendered(root: Path, scale: float, scenes: int = 3, frames: int = 2, h: int = 20, w: int = 30) -> None:
    """<scene>/rgb/NNNNNN.png (8-bit, written BGR as every OpenCV/PIL pipeline stores it) + <scene>/depth/ 16-bit."""
    rgb, depth = rendered_frame(h, w)
    for s in range(scenes):
        for i in range(frames):
            (root / f"scene{s}" / "rgb").mkdir(parents=True, exist_ok=True)
            (root / f"scene{s}" / "depth").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / f"scene{s}" / "rgb" / f"{i:06d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / f"scene{s}" / "depth" / f"{i:06d}.png"), np.round(depth * scale).astype(np.uint16))


def load_all(reader) -> dict:
    return {s.source_id: (s, reader.load(s)) for s in reader.samples()}


# ---------------------------------------------------------------- NYUv2


def test_nyu_axes_channels_intrinsics_and_official_split(tmp_path):
    write_nyu(tmp_path, 6)
    rgb, depth = nyu_frames(6)
    reader = make_reader("nyuv2", tmp_path, {"val_fraction": 0.25})
    frames = load_all(reader)
    splits = {sid: s.split for sid, (s, _) in frames.items()}
    assert sorted(k for k, v in splits.items() if v == "test") == ["0004", "0006"]  # testNdxs, 1-based
    assert sorted(v for v in splits.values()) == ["test", "test", "train", "train", "train", "val"]
    s, frame = frames["0005"]
    assert s.scene == "kitchen_0002"
    assert frame.rgb.shape == (NYU_H, NYU_W, 3) and frame.rgb.dtype == np.uint8
    np.testing.assert_array_equal(frame.rgb, rgb[4])  # no transpose, flip or channel swap
    np.testing.assert_allclose(frame.depth, depth[4])
    assert frame.rgb[-1, 0, 0] == 255 and frame.rgb[0, -1, 1] == 255  # R grows down the rows, G along the columns
    np.testing.assert_allclose(frame.intrinsics, NYU_INTRINSICS)
    attrs = reader.attrs(NYU_H, NYU_W)
    assert attrs["eval_crop"] == "eigen" and attrs["eigen_crop"] == list(EIGEN_CROP)
    reader.close()


def test_nyu_split_file_variants(tmp_path):
    """splits.mat re-saved as v7.3 (h5py sees (1, n)) and the CSV fallback give the same split as the v5 file."""
    write_nyu(tmp_path, 6, split=None)
    with h5py.File(tmp_path / "splits73.mat", "w") as f:
        f["trainNdxs"] = np.array([[1, 2, 3, 5]], np.float64)
        f["testNdxs"] = np.array([[4, 6]], np.float64)
    pd.DataFrame({"index": [1, 2, 3, 5, 4, 6], "split": ["train"] * 4 + ["test"] * 2}).to_csv(tmp_path / "s.csv")
    for name in ("splits73.mat", "s.csv"):
        reader = make_reader("nyuv2", tmp_path, {"splits_file": name, "val_fraction": 0.25})
        assert sorted(s.source_id for s in reader.samples() if s.split == "test") == ["0004", "0006"]
    random_split = make_reader("nyuv2", tmp_path, {"splits_file": None, "val_fraction": 0.2, "test_fraction": 0.2})
    assert {s.split for s in random_split.samples()} == {"train", "val", "test"}


# ---------------------------------------------------------------- Hypersim


def test_hypersim_official_split_planar_depth_and_tonemap(tmp_path):
    truth = write_hypersim(tmp_path)
    reader = make_reader("hypersim", tmp_path)
    frames = load_all(reader)
    assert "ai_001_001/cam_00/0001" not in frames  # not included in the public release
    assert {sid: s.split for sid, (s, _) in frames.items()} == {
        "ai_001_001/cam_00/0000": "train", "ai_001_002/cam_00/0000": "val", "ai_001_002/cam_00/0001": "val",
        "ai_001_003/cam_00/0000": "test", "ai_001_003/cam_00/0001": "test"}
    _, frame = frames["ai_001_002/cam_00/0001"]
    assert frame.rgb.shape == (24, 30, 3) and frame.depth.shape == (24, 30)
    # Planar z of the known plane, not the radial distance (which is up to ~15% larger in the corners).
    expected = truth["planar"].astype(np.float32)
    expected[-1, -1] = 0.0  # NaN distance -> invalid
    np.testing.assert_allclose(frame.depth, expected, rtol=2e-3, atol=1e-6)
    assert frame.depth[-1, -1] == 0.0
    np.testing.assert_allclose(frame.intrinsics, [truth["f"], truth["f"], 14.5, 11.5], rtol=1e-5)
    # Tone map: the 90th-percentile brightness (0.5 everywhere) maps to 0.8 -> 204; the red pixel stays pure red.
    assert tuple(frame.rgb[2, 7]) == (204, 0, 0)
    assert tuple(frame.rgb[7, 2]) == (204, 204, 204)
    check_frame(frame, "x")


def test_hypersim_without_csv_splits_by_scene(tmp_path):
    write_hypersim(tmp_path, csv=False)
    reader = make_reader("hypersim", tmp_path, {"split_csv": None, "val_fraction": 0.3, "test_fraction": 0.3})
    by_scene: dict[str, set] = {}
    for s in reader.samples():
        by_scene.setdefault(s.scene, set()).add(s.split)
    assert all(len(v) == 1 for v in by_scene.values())  # a scene never straddles two splits
    assert set().union(*by_scene.values()) == {"train", "val", "test"}


def test_tonemap_matches_the_official_formula():
    rng = np.random.default_rng(0)
    hdr = rng.gamma(1.0, 2.0, (16, 12, 3)).astype(np.float32)
    valid = rng.random((16, 12)) > 0.2
    brightness = 0.3 * hdr[..., 0] + 0.59 * hdr[..., 1] + 0.11 * hdr[..., 2]
    scale = 0.8 ** 2.2 / np.percentile(brightness[valid], 90)
    expected = np.rint(np.clip((scale * hdr) ** (1 / 2.2), 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(tonemap(hdr, valid), expected)


def test_radial_to_planar_on_the_optical_axis_and_off_it():
    f, cx, cy = 10.0, 2.0, 1.0
    d = np.full((3, 5), 2.0, np.float32)
    z = radial_to_planar(d, f, f, cx, cy)
    assert z[1, 2] == pytest.approx(2.0)  # on the axis, distance == depth
    assert z[0, 4] == pytest.approx(2.0 / math.sqrt(1 + (2 / f) ** 2 + (1 / f) ** 2))


# ---------------------------------------------------------------- rendered folders (Replica, HM3D, VA)


@pytest.mark.parametrize("fmt, scale", [("replica", 1000.0), ("hm3d", 1000.0), ("va", 4000.0)])
def test_rendered_presets_read_rgb_order_and_metric_depth(tmp_path, fmt, scale):
    write_rendered(tmp_path, scale)
    rgb, depth = rendered_frame(20, 30)
    reader = make_reader(fmt, tmp_path)
    frames = load_all(reader)
    assert len(frames) == 6 and {s.split for s, _ in frames.values()} == {"train", "val", "test"}
    _, frame = frames["scene1/rgb/000001.png"]
    assert tuple(frame.rgb[0, 0]) == (255, 0, 0)  # RGB order, not OpenCV's BGR
    np.testing.assert_array_equal(frame.rgb, rgb)
    np.testing.assert_allclose(frame.depth, depth, atol=1 / scale)  # metres: the preset's scale
    np.testing.assert_allclose(frame.intrinsics, [15.0, 15.0, 14.5, 9.5])  # 90 degree horizontal FOV


def test_rendered_options_override_scale_layout_and_split(tmp_path):
    rgb, depth = rendered_frame(20, 30)
    for split in ("train", "val", "test"):
        (tmp_path / split / "room" / "color").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / split / "room" / "color" / "a.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 100])
        cv2.imwrite(str(tmp_path / split / "room" / "color" / "a_depth.png"), np.round(depth * 256).astype(np.uint16))
    options = {"rgb_glob": "*/*/color/*.jpg", "depth_pattern": r"\.jpg$", "depth_replace": "_depth.png",
               "depth_scale": 256, "split_by": "folder", "intrinsics": [20, 21, 15, 10]}
    reader = make_reader("replica", tmp_path, options)  # explicit intrinsics replace the preset's FOV
    frames = load_all(reader)
    assert {s.source_id: s.split for s, _ in frames.values()} == {
        "train/room/color/a.jpg": "train", "val/room/color/a.jpg": "val", "test/room/color/a.jpg": "test"}
    s, frame = frames["val/room/color/a.jpg"]
    assert s.scene == "room"
    np.testing.assert_allclose(frame.depth, depth, atol=1 / 256)
    assert frame.rgb[0, 0, 0] > 240 and frame.rgb[0, 0, 2] < 15  # red stays red through JPEG
    np.testing.assert_allclose(frame.intrinsics, [20, 21, 15, 10])


def test_registry_names_every_format():
    assert {"nyuv2", "hypersim", "rendered", "replica", "hm3d", "va"} <= set(READERS)
    with pytest.raises(MetadepthError, match="unknown dataset format 'kinect'"):
        make_reader("kinect", ".")
    with pytest.raises(MetadepthError, match="depth_scal: unknown option"):
        make_reader("va", ".", {"depth_scal": 4})


# ---------------------------------------------------------------- the resize policy


def test_fit_to_resolution_covers_crops_centre_and_keeps_geometry():
    h, w = 40, 90
    rgb = np.zeros((h, w, 3), np.uint8)
    depth = np.zeros((h, w), np.float32)
    depth[:, :47] = 1.0  # a sharp depth edge (where bilinear sampling would blend): no value between 1 and 5
    depth[:, 47:] = 5.0
    depth[20, 40] = 0.0  # an invalid pixel: no value between 0 and 1 either
    # A 3D point projected with K lands on a marker; after the policy it must land where K' projects it.
    k = np.array([50.0, 50.0, (w - 1) / 2, (h - 1) / 2])
    point = np.array([0.3, -0.1, 1.0])
    u, v = k[0] * point[0] / point[2] + k[2], k[1] * point[1] / point[2] + k[3]
    rgb[round(v) - 1 : round(v) + 2, round(u) - 1 : round(u) + 2] = 255
    out_rgb, out_depth, k2 = fit_to_resolution(rgb, depth, k, 32, 48)
    assert out_rgb.shape == (32, 48, 3) and out_depth.shape == (32, 48) and out_depth.dtype == np.float32
    assert set(np.unique(out_depth)) <= {0.0, 1.0, 5.0}  # nearest for depth: never blended across the edge
    assert k2[0] == pytest.approx(k2[1])  # uniform scale: square pixels stay square
    u2, v2 = k2[0] * point[0] / point[2] + k2[2], k2[1] * point[1] / point[2] + k2[3]
    ys, xs = np.nonzero(out_rgb[..., 0] > 100)
    assert abs(xs.mean() - u2) < 0.6 and abs(ys.mean() - v2) < 0.6
    # Shorter side (relative to the target aspect) fits exactly: 40 rows -> 32, 90 columns -> 72, crop 12 each side.
    assert k2[0] == pytest.approx(50 * 0.8) and k2[2] == pytest.approx(((w - 1) / 2 + 0.5) * 0.8 - 0.5 - 12)
    assert map_box((0, 40, 12, 78), (h, w), 32, 48) == [0, 32, 0, 48]


# ---------------------------------------------------------------- bad input: one line, naming the file


def _one_line_error(fn, *names: str) -> str:
    with pytest.raises(MetadepthError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg
    for name in names:
        assert name in msg
    return msg


def _load_every_frame(reader) -> None:
    for s in reader.samples():
        check_frame(reader.load(s), s.file)


def test_bad_truncated_mat(tmp_path):
    mat = write_nyu(tmp_path, 3)
    data = mat.read_bytes()
    mat.write_bytes(data[: len(data) // 2])
    _one_line_error(lambda: make_reader("nyuv2", tmp_path).samples(), "nyu_depth_v2_labeled.mat")


def test_bad_truncated_hypersim_frame(tmp_path):
    write_hypersim(tmp_path)
    frame = tmp_path / "ai_001_003/images/scene_cam_00_geometry_hdf5/frame.0001.depth_meters.hdf5"
    frame.write_bytes(frame.read_bytes()[:300])
    _one_line_error(lambda: _load_every_frame(make_reader("hypersim", tmp_path)), "frame.0001.depth_meters.hdf5",
                    "truncated or corrupt")


def test_bad_mat_without_expected_keys(tmp_path):
    write_nyu(tmp_path, 3, images_key="rgb")
    _one_line_error(lambda: make_reader("nyuv2", tmp_path).samples(), "nyu_depth_v2_labeled.mat", "'images'")


def test_bad_splits_without_expected_keys(tmp_path):
    write_nyu(tmp_path, 3, split=None)
    from scipy.io import savemat

    savemat(tmp_path / "splits.mat", {"train": np.array([[1]])})
    _one_line_error(lambda: make_reader("nyuv2", tmp_path).samples(), "splits.mat", "trainNdxs")


def test_bad_mat_wrong_shape(tmp_path):
    rgb, depth = nyu_frames(3)
    write_nyu(tmp_path, rgb=rgb, depth=depth.transpose(0, 2, 1))  # stored (N, H, W): the axes were not reversed
    _one_line_error(lambda: make_reader("nyuv2", tmp_path).samples(), "nyu_depth_v2_labeled.mat", "'depths'",
                    "shape")


def test_bad_mat_wrong_dtype(tmp_path):
    rgb, depth = nyu_frames(3)
    write_nyu(tmp_path, rgb=rgb.astype(np.float32), depth=depth)
    _one_line_error(lambda: make_reader("nyuv2", tmp_path).samples(), "nyu_depth_v2_labeled.mat", "dtype")


def test_bad_mismatched_counts_mat(tmp_path):
    rgb, depth = nyu_frames(3)
    write_nyu(tmp_path, rgb=rgb, depth=depth[:2])
    _one_line_error(lambda: make_reader("nyuv2", tmp_path).samples(), "3 images but 2 depth maps")


def test_bad_mismatched_counts_rendered(tmp_path):
    write_rendered(tmp_path, 1000.0)
    (tmp_path / "scene2" / "depth" / "000001.png").unlink()
    _one_line_error(lambda: _load_every_frame(make_reader("replica", tmp_path)), "scene2/rgb/000001.png",
                    "no depth map")


@pytest.mark.parametrize("fmt", ["replica", "hypersim", "nyuv2"])
def test_bad_empty_folder(tmp_path, fmt):
    _one_line_error(lambda: make_reader(fmt, tmp_path).samples(), str(tmp_path))


@pytest.mark.parametrize("value", [np.nan, np.inf, -1.0])
def test_bad_nan_inf_or_negative_depth(tmp_path, value):
    rgb, depth = nyu_frames(6)
    depth[2, 100, 200] = value
    write_nyu(tmp_path, rgb=rgb, depth=depth)
    msg = _one_line_error(lambda: _load_every_frame(make_reader("nyuv2", tmp_path)), "nyu_depth_v2_labeled.mat[3]")
    assert ("negative" in msg) if value < 0 else ("NaN/inf" in msg)


def test_bad_inf_depth_in_hypersim(tmp_path):
    write_hypersim(tmp_path)
    path = tmp_path / "ai_001_002/images/scene_cam_00_geometry_hdf5/frame.0000.depth_meters.hdf5"
    with h5py.File(path, "r+") as f:
        f["dataset"][3, 3] = np.inf
    _one_line_error(lambda: _load_every_frame(make_reader("hypersim", tmp_path)), "frame.0000.color.hdf5", "NaN/inf")


def test_bad_unreadable_png(tmp_path):
    write_rendered(tmp_path, 1000.0)
    bad = tmp_path / "scene0" / "rgb" / "000001.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated PNG
    _one_line_error(lambda: _load_every_frame(make_reader("hm3d", tmp_path)), "scene0/rgb/000001.png", "unreadable")


def test_bad_depth_png_dtype(tmp_path):
    write_rendered(tmp_path, 1000.0)
    cv2.imwrite(str(tmp_path / "scene1" / "depth" / "000000.png"), np.full((20, 30), 3, np.uint8))
    _one_line_error(lambda: _load_every_frame(make_reader("hm3d", tmp_path)), "scene1/depth/000000.png", "8-bit")


def test_bad_rgb_depth_size_mismatch(tmp_path):
    write_rendered(tmp_path, 1000.0)
    cv2.imwrite(str(tmp_path / "scene1" / "depth" / "000000.png"), np.full((30, 20), 3000, np.uint16))
    _one_line_error(lambda: _load_every_frame(make_reader("hm3d", tmp_path)), "scene1/rgb/000000.png", "20x30")
