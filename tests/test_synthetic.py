"""Tests for the procedural synthetic RGB-D generator (tasks/preprocess/synthetic/)."""

import math

import numpy as np
import pytest

from tasks.preprocess import synthetic as syn

H, W = 24, 32  # small frames keep the whole file fast


def _batch(domain: str, n: int = 6, seed: int = 0, start: int = 0) -> dict[str, np.ndarray]:
    return syn.render_batch(domain, np.arange(start, start + n), seed, H, W)


@pytest.mark.parametrize("domain", ["loft", "apartment", "studio", "office"])
def test_batch_shapes_dtypes_and_ranges(domain: str) -> None:
    out = _batch(domain)
    assert out["rgb"].shape == (6, H, W, 3) and out["rgb"].dtype == np.uint8
    assert out["depth"].shape == (6, H, W) and out["depth"].dtype == np.float32
    assert out["intrinsics"].shape == (6, 4) and out["intrinsics"].dtype == np.float32
    assert out["scene"].shape == (6,) and out["scene"].dtype == np.int64
    depth = out["depth"]
    valid = depth > 0
    assert np.isfinite(depth).all() and (depth >= 0).all()
    assert valid.mean() > 0.95  # only sky / beyond-range pixels are invalid
    assert depth[valid].min() > 0.1 and depth[valid].max() <= syn.DOMAINS[domain].max_depth_m
    assert (out["rgb"].reshape(6, -1).std(1) > 5).all()  # real images, not flat fills
    spec = syn.DOMAINS[domain]
    np.testing.assert_array_equal(out["scene"], np.arange(6) // spec.frames_per_scene)


def test_all_required_domains_exist_and_are_fully_described() -> None:
    assert {"loft", "apartment", "studio", "office"} <= set(syn.DOMAINS)
    for spec in syn.DOMAINS.values():
        assert isinstance(spec, syn.DomainSpec)
        for name, _ in spec.furniture_kinds:
            assert name in syn.FURNITURE
        textures = (spec.wall_textures, spec.floor_textures, spec.ceiling_textures, spec.furniture_textures)
        for weights in textures:
            assert all(name in syn.PATTERNS for name, _ in weights)


def test_same_seed_is_deterministic_and_batching_does_not_matter() -> None:
    a = syn.render_batch("apartment", np.arange(16), 3, H, W)
    b = syn.render_batch("apartment", np.arange(16), 3, H, W)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    ones = list(syn.generate("apartment", 16, 3, H, W, batch_size=1))
    assert len(ones) == 16
    for key in a:
        np.testing.assert_array_equal(np.concatenate([o[key] for o in ones]), a[key])
    # A sample does not depend on which batch it lands in either.
    single = syn.render_batch("apartment", np.array([11]), 3, H, W)
    np.testing.assert_array_equal(single["rgb"][0], a["rgb"][11])
    np.testing.assert_array_equal(single["depth"][0], a["depth"][11])


def test_different_seeds_give_different_data() -> None:
    a, b = _batch("studio", seed=0), _batch("studio", seed=1)
    assert not np.array_equal(a["rgb"], b["rgb"])
    assert not np.array_equal(a["depth"], b["depth"])


def test_generate_streams_indices_in_order() -> None:
    batches = list(syn.generate("office", 10, 5, H, W, batch_size=4))
    assert [len(b["depth"]) for b in batches] == [4, 4, 2]
    whole = syn.render_batch("office", np.arange(10), 5, H, W)
    for key in whole:
        np.testing.assert_array_equal(np.concatenate([b[key] for b in batches]), whole[key])
    assert list(syn.generate("office", 0, 5, H, W)) == []


def test_frames_of_a_scene_share_the_room_but_not_the_camera() -> None:
    per_scene = syn.DOMAINS["loft"].frames_per_scene
    scene_a, cam_a = syn.sample_view("loft", 0, 0, H, W)
    scene_b, cam_b = syn.sample_view("loft", per_scene - 1, 0, H, W)
    scene_c, _ = syn.sample_view("loft", per_scene, 0, H, W)
    np.testing.assert_array_equal(scene_a.room, scene_b.room)
    np.testing.assert_array_equal(scene_a.boxes, scene_b.boxes)
    assert not np.array_equal(cam_a.position, cam_b.position)
    assert not np.array_equal(scene_a.room, scene_c.room)


def test_depth_is_planar_when_facing_a_wall() -> None:
    """Facing a wall 2 m away, every pixel has z = 2 (radial distance would grow towards the corners)."""
    scene = syn.empty_room_scene((10.0, 3.0, 10.0))
    for yaw, position in ((0.0, (5.0, 1.5, 8.0)), (90.0, (8.0, 1.5, 5.0)), (180.0, (5.0, 1.5, 2.0))):
        camera = syn.look_camera(position, yaw_deg=yaw, pitch_deg=0.0, roll_deg=0.0, hfov_deg=60.0,
                                 height=H, width=W)
        depth = syn.trace_depth(scene, camera, H, W)
        np.testing.assert_allclose(depth, 2.0, rtol=0, atol=1e-5)
    corner_ray = math.hypot(math.hypot((0 - camera.cx) / camera.fx, (0 - camera.cy) / camera.fy), 1.0)
    assert 2.0 * corner_ray > 2.2  # a radial-depth renderer would fail the check above


def test_floor_and_ceiling_depth_match_pinhole_geometry() -> None:
    scene = syn.empty_room_scene((20.0, 3.0, 40.0))
    height_m = 1.2
    camera = syn.look_camera((10.0, height_m, 1.0), 0.0, 0.0, 0.0, 60.0, H, W)
    depth = syn.trace_depth(scene, camera, H, W)
    bottom, top = H - 1, 0
    # A floor point seen at row v is height_m below the optical axis: z = height_m * fy / (v - cy).
    np.testing.assert_allclose(depth[bottom], height_m * camera.fy / (bottom - camera.cy), rtol=1e-6)
    np.testing.assert_allclose(depth[top], (3.0 - height_m) * camera.fy / (camera.cy - top), rtol=1e-6)


@pytest.mark.parametrize("domain", ["loft", "office"])
def test_rendered_depth_back_projects_onto_scene_surfaces(domain: str) -> None:
    """Back-projecting each depth pixel with the returned intrinsics lands on a box face of the scene."""
    height, width = 30, 40
    for index in (0, 3, 9):
        out = syn.render_batch(domain, np.array([index]), 2, height, width)
        scene, camera = syn.sample_view(domain, index, 2, height, width)
        fx, fy, cx, cy = out["intrinsics"][0]
        np.testing.assert_allclose(out["intrinsics"][0], camera.intrinsics)
        depth = out["depth"][0]
        v, u = np.nonzero(depth > 0)
        z = depth[v, u].astype(np.float64)
        cam_points = np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], axis=1)
        world = cam_points @ camera.rotation.T + camera.position
        boxes = np.concatenate([scene.room[None], scene.pockets, scene.boxes])
        lo, hi = boxes[None, :, :3], boxes[None, :, 3:]
        p = world[:, None, :]
        outside = np.linalg.norm(np.maximum(np.maximum(lo - p, p - hi), 0.0), axis=2)
        inside = np.minimum(p - lo, hi - p).min(2)
        surface_distance = np.where(outside > 0, outside, np.abs(inside)).min(1)
        assert surface_distance.max() < 2e-3 * max(1.0, z.max())
        np.testing.assert_allclose(depth[v, u], syn.trace_depth(scene, camera, height, width)[v, u])


@pytest.mark.parametrize("domain", ["loft", "apartment", "studio", "office"])
def test_intrinsics_match_field_of_view_and_image_size(domain: str) -> None:
    spec = syn.DOMAINS[domain]
    for height, width in ((H, W), (48, 96)):
        intr = syn.render_batch(domain, np.arange(4), 0, height, width)["intrinsics"]
        fx, fy, cx, cy = intr.T
        hfov = np.degrees(2 * np.arctan(width / (2 * fx)))
        assert (hfov >= spec.hfov_deg[0] - 1e-3).all() and (hfov <= spec.hfov_deg[1] + 1e-3).all()
        np.testing.assert_allclose(fy, fx)
        np.testing.assert_allclose(cx, (width - 1) / 2)
        np.testing.assert_allclose(cy, (height - 1) / 2)


def test_domains_differ_measurably() -> None:
    stats = {}
    for domain in syn.DOMAINS:
        out = syn.render_batch(domain, np.arange(24), 1, H, W)
        depth = out["depth"]
        stats[domain] = {
            "depth": depth[depth > 0].mean(),
            "brightness": out["rgb"].mean(),
            "fov": np.degrees(2 * np.arctan(W / (2 * out["intrinsics"][:, 0]))).mean(),
        }
    # Room scale: Hypersim-like lofts are deeper than Replica-like studios.
    assert stats["loft"]["depth"] > 1.5 * stats["studio"]["depth"]
    assert stats["apartment"]["depth"] > stats["studio"]["depth"]
    # Lighting/palette: clean bright studios, dim offices.
    assert stats["studio"]["brightness"] > stats["loft"]["brightness"] > stats["office"]["brightness"] + 10
    # Cameras: wide Replica-like FOV, narrow Kinect-like FOV.
    fovs = [stats[d]["fov"] for d in ("studio", "apartment", "loft", "office")]
    assert all(a > b + 3 for a, b in zip(fovs, fovs[1:], strict=False))


@pytest.mark.parametrize("call", [
    lambda: syn.render_batch("kitchen", np.arange(2), 0, H, W),
    lambda: syn.generate("kitchen", 2, 0, H, W),
])
def test_unknown_domain_is_rejected_with_the_valid_names(call) -> None:
    with pytest.raises(ValueError, match="kitchen") as err:
        call()
    for name in syn.DOMAINS:
        assert name in str(err.value)


def test_scenes_limit_the_distinct_rooms_and_keep_every_camera() -> None:
    per_scene = syn.DOMAINS["office"].frames_per_scene
    limited = syn.render_batch("office", np.arange(24), 0, H, W, scenes=2)
    assert set(limited["scene"].tolist()) == {0, 1}
    assert len({frame.tobytes() for frame in limited["rgb"]}) == 24  # 24 distinct views of 2 rooms
    # The first two rooms' frames are the unlimited ones; a limit of at least the number of rooms changes nothing.
    unlimited = syn.render_batch("office", np.arange(24), 0, H, W)
    for key in unlimited:
        np.testing.assert_array_equal(limited[key][: 2 * per_scene], unlimited[key][: 2 * per_scene])
        np.testing.assert_array_equal(syn.render_batch("office", np.arange(24), 0, H, W, scenes=6)[key],
                                      unlimited[key])
    # Frame 2 * per_scene is back in room 0: the same boxes as frame 0, its own camera.
    scene_a, cam_a = syn.sample_view("office", 0, 0, H, W, scenes=2)
    scene_b, cam_b = syn.sample_view("office", 2 * per_scene, 0, H, W, scenes=2)
    np.testing.assert_array_equal(scene_a.boxes, scene_b.boxes)
    assert not np.array_equal(cam_a.position, cam_b.position)
    with pytest.raises(ValueError, match="scenes"):
        syn.generate("office", 4, 0, H, W, scenes=0)


def test_train_scenes_limits_the_train_split_of_prepared_data(tmp_path) -> None:
    import pandas as pd

    from tasks.params import load_params
    from tasks.preprocess.prepare import prepare

    base = load_params("params.yaml")
    manifests = {}
    for scenes in (None, 2):
        data = base.data.model_copy(update={"height": H, "width": W, "train_size": 30, "val_size": 12, "test_size": 12,
                                            "train_scenes": scenes})
        prepare(base.model_copy(update={"domains": ["studio"], "train_domain": "studio", "data": data}),
                tmp_path / str(scenes), "studio")
        manifests[scenes] = pd.read_csv(tmp_path / str(scenes) / "data" / "prepared" / "studio" / "manifest.csv")
    limited, full = (m.groupby("split")["scene"].nunique() for m in (manifests[2], manifests[None]))
    assert limited["train"] == 2 and full["train"] == 5  # 30 frames, 6 per studio room
    assert (manifests[2]["split"] == "train").sum() == 30
    for split in ("val", "test"):
        pd.testing.assert_frame_equal(manifests[2][manifests[2]["split"] == split],
                                      manifests[None][manifests[None]["split"] == split])


@pytest.mark.parametrize(("data", "message"), [
    ({"train_scenes": 0}, "data.train_scenes: Input should be greater than or equal to 1"),
    ({"train_scenes": -3}, "data.train_scenes: Input should be greater than or equal to 1"),
    ({"train_scenes": 2, "sources": {"va": {"format": "va", "path": "va"}}, "top": {"domains": ["va", "loft"],
                                                                                "train_domain": "va"}},
     "train_scenes applies to synthetic domains only"),
])
def test_train_scenes_is_validated_with_its_key(data: dict, message: str) -> None:
    from tasks.io import MetadepthError
    from tasks.params import load_params, validate

    raw = load_params("params.yaml").model_dump(mode="json")
    raw.update(data.pop("top", {}))
    raw["data"].update(data)
    with pytest.raises(MetadepthError, match=message):
        validate(raw)
