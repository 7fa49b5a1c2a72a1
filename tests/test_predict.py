"""`metadepth predict`: outputs match the network, odd inputs are skipped by name, point clouds back-project right."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from tasks.checkpoints import build_model, model_from_checkpoint, save_checkpoint
from tasks.io import MetadepthError
from tasks.predict import Camera, backproject, predict_paths, write_ply

MODEL = {"encoder": "test_convnext", "pretrained_path": None, "decoder_channels": [4, 8, 8, 16, 16],
         "scales": [0, 1, 2, 3], "min_depth": 0.1, "max_depth": 10.0}
SIZES = {"a.png": (40, 60), "a.jpg": (40, 60), "sub/b.png": (33, 47), "sub/deeper/c.bmp": (20, 30)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model(MODEL)
    with torch.no_grad():  # a random head is almost constant; spread the output so comparisons mean something
        for head in model.heads.values():
            head.weight.mul_(50)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model, MODEL, step=7, data_hash="")
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    """A folder of mixed sizes and formats, with a corrupt PNG, a text file named .jpg and a plain text file."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name, (h, w) in SIZES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 0)
        if name.endswith(".bmp"):
            img = img[..., 0]  # greyscale input
        assert cv2.imwrite(str(root / name), img)
    (root / "corrupt.png").write_bytes((root / "a.png").read_bytes()[:60])  # truncated
    (root / "fake.jpg").write_text("this is not a picture")
    (root / "notes.txt").write_text("not an image either")
    return root


def rgb01(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


@functools.cache
def _net(checkpoint: Path) -> torch.nn.Module:
    return model_from_checkpoint(checkpoint)[0].eval()


def direct(checkpoint: Path, rgb: np.ndarray) -> np.ndarray:
    """The network's scale-0 output for one (H, W, 3) float image, called directly."""
    model = _net(checkpoint)
    with torch.no_grad():
        return model(torch.from_numpy(rgb).permute(2, 0, 1)[None])[0][0, 0].numpy()


def read_ply(path: Path) -> tuple[list[str], np.ndarray]:
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    n = int(next(line.split()[-1] for line in header if line.startswith("element vertex")))
    if "format ascii 1.0" in header:
        rows = np.loadtxt(data[end:].decode().splitlines(), ndmin=2)
        assert rows.shape == (n, 6)
        return header, rows
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    assert len(data) - end == n * dtype.itemsize, "binary body size does not match the vertex count"
    v = np.frombuffer(data[end:], dtype=dtype)
    return header, np.stack([v["x"], v["y"], v["z"], v["r"], v["g"], v["b"]], axis=1).astype(np.float64)


def test_folder_of_mixed_inputs(checkpoint, images, tmp_path):
    warnings: list[str] = []
    out = tmp_path / "out"
    summary = predict_paths(checkpoint, [images], out, batch_size=2, on_warning=warnings.append)
    assert summary["predicted"] == 4 and summary["checkpoint_step"] == 7
    assert sorted(Path(s["path"]).name for s in summary["skipped"]) == ["corrupt.png", "fake.jpg"]
    assert any("corrupt.png" in w for w in warnings) and any("fake.jpg" in w for w in warnings)
    assert [Path(p).name for p in summary["ignored"]] == ["notes.txt"]
    # a.png and a.jpg do not overwrite each other; the folder layout is mirrored
    stems = {"a", "a_png", "sub/b", "sub/deeper/c"}
    assert {p.relative_to(out).with_suffix("").as_posix() for p in out.rglob("*.npy")} == stems
    for stem in stems:
        depth = np.load(out / f"{stem}.npy")
        source = next(images / n for n in SIZES if Path(n).with_suffix("").as_posix() == stem.removesuffix("_png"))
        assert depth.dtype == np.float32 and depth.shape == SIZES[source.relative_to(images).as_posix()]
        preview = cv2.imread(str(out / f"{stem}.png"))
        assert preview.shape == (*depth.shape, 3)
    assert not list(out.rglob(".*tmp-*")), "no temporary files left behind"


def test_npy_is_the_network_output(checkpoint, images, tmp_path):
    """Batched (same-size images together) and single inference both equal a direct forward pass."""
    for batch_size in (1, 3):
        out = tmp_path / f"b{batch_size}"
        predict_paths(checkpoint, [images / "a.png", images / "a.jpg", images / "sub"], out, batch_size=batch_size)
        for name, stem in (("a.png", "a"), ("a.jpg", "a_jpg"), ("sub/b.png", "b"), ("sub/deeper/c.bmp", "deeper/c")):
            expected = direct(checkpoint, rgb01(images / name))
            np.testing.assert_allclose(np.load(out / f"{stem}.npy"), expected, rtol=1e-5, atol=1e-5)
    assert np.ptp(np.load(tmp_path / "b1" / "a.npy")) > 0.05, "the test model must not predict a constant"


def test_max_side_runs_smaller_and_returns_input_resolution(checkpoint, images, tmp_path):
    predict_paths(checkpoint, [images / "a.png"], tmp_path, max_side=24)
    rgb = rgb01(images / "a.png")
    small = cv2.resize(rgb, (24, 16), interpolation=cv2.INTER_AREA)
    expected = cv2.resize(direct(checkpoint, small), (60, 40), interpolation=cv2.INTER_LINEAR)
    got = np.load(tmp_path / "a.npy")
    assert got.shape == (40, 60)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_strict_fails_on_the_bad_file(checkpoint, images, tmp_path):
    with pytest.raises(MetadepthError, match=r"corrupt\.png: cannot be decoded"):
        predict_paths(checkpoint, [images], tmp_path / "out", strict=True)
    with pytest.raises(MetadepthError, match=r"notes\.txt: not an image file"):
        predict_paths(checkpoint, [images / "notes.txt"], tmp_path / "out", strict=True)


def test_bad_arguments_are_clear_errors(checkpoint, images, tmp_path):
    with pytest.raises(MetadepthError, match="no such file or folder"):
        predict_paths(checkpoint, [tmp_path / "missing"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MetadepthError, match="no images found"):
        predict_paths(checkpoint, [tmp_path / "empty"], tmp_path / "out")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(MetadepthError, match="not a loadable checkpoint"):
        predict_paths(bad, [images], tmp_path / "out")
    with pytest.raises(MetadepthError, match="--fov"):
        Camera(fov_deg=180)


def test_output_folder_inside_the_input_is_not_read_back(checkpoint, images):
    first = predict_paths(checkpoint, [images], images / "depth")
    second = predict_paths(checkpoint, [images], images / "depth")
    assert first["predicted"] == second["predicted"] == 4


def test_backprojection_of_a_known_depth(tmp_path):
    depth = np.full((3, 4), 2.0, dtype=np.float32)
    depth[2, 3] = 4.0
    points = backproject(depth, fx=2.0, fy=4.0, cx=1.5, cy=1.0).reshape(3, 4, 3)
    np.testing.assert_allclose(points[2, 3], [(3 - 1.5) * 4.0 / 2.0, (2 - 1.0) * 4.0 / 4.0, 4.0])
    np.testing.assert_allclose(points[0, 0], [(0 - 1.5) * 2.0 / 2.0, (0 - 1.0) * 2.0 / 4.0, 2.0])
    colors = np.arange(36, dtype=np.uint8).reshape(12, 3)
    for as_ascii in (False, True):
        path = tmp_path / f"cloud{as_ascii}.ply"
        write_ply(path, points.reshape(-1, 3), colors, as_ascii=as_ascii)
        header, rows = read_ply(path)
        assert header[0] == "ply" and header[-1] == "end_header" and "element vertex 12" in header
        assert ("format ascii 1.0" in header) == as_ascii
        np.testing.assert_allclose(rows[:, :3], points.reshape(-1, 3), rtol=1e-5)
        np.testing.assert_array_equal(rows[:, 3:], colors)


def test_default_intrinsics_from_the_field_of_view():
    fx, fy, cx, cy = Camera(fov_deg=90).matrix(height=40, width=60)
    assert fx == pytest.approx(30.0) and fy == pytest.approx(30.0) and (cx, cy) == (29.5, 19.5)
    assert Camera(fx=100, cx=3).matrix(40, 60) == (100, 100, 3, 19.5)


def test_ply_from_predict_matches_the_depth_map(checkpoint, images, tmp_path):
    predict_paths(checkpoint, [images / "sub/b.png"], tmp_path, ply=True, camera=Camera(fx=50, fy=40, cx=20, cy=10))
    depth = np.load(tmp_path / "b.npy")
    header, rows = read_ply(tmp_path / "b.ply")
    assert f"element vertex {33 * 47}" in header
    v, u = np.divmod(np.arange(33 * 47), 47)
    z = depth.reshape(-1)
    np.testing.assert_allclose(rows[:, 2], z, rtol=1e-6)
    np.testing.assert_allclose(rows[:, 0], (u - 20) * z / 50, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rows[:, 1], (v - 10) * z / 40, rtol=1e-5, atol=1e-5)
    rgb = cv2.cvtColor(cv2.imread(str(images / "sub/b.png")), cv2.COLOR_BGR2RGB).reshape(-1, 3)
    np.testing.assert_array_equal(rows[:, 3:], rgb)


def test_cli(checkpoint, images, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["predict", str(checkpoint), str(images), "--out", str(tmp_path / "o"), "--ply",
                             "--no-progress", "--batch-size", "2"])
    assert ok.exit_code == 0, ok.output
    assert re.search(r"predicted 4 image\(s\) on cpu", ok.output)
    assert "warning: skipped" in ok.output and "corrupt.png" in ok.output
    assert len(list((tmp_path / "o").rglob("*.ply"))) == 4
    strict = runner.invoke(app, ["predict", str(checkpoint), str(images), "--out", str(tmp_path / "s"), "--strict",
                                 "--no-progress"])
    assert strict.exit_code == 1
    errors = [line for line in strict.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "corrupt.png" in errors[0] and "--strict" in errors[0]


@pytest.mark.parametrize("name, message", [
    ("notes.txt", r"notes\.txt: not an image file \(suffix '\.txt'; accepted: \.png .*or folders of them\)"),
    ("empty", r"empty: no images found in this folder \(accepted: \.png "),
    ("corrupt.png", r"no image could be read from .*corrupt\.png \(1 skipped"),
])
def test_an_explicit_input_that_yields_nothing_is_an_error(checkpoint, images, tmp_path, name, message):
    """Named next to a good image too: each input on the command line must give something (issue 15, item 4)."""
    (images / "empty").mkdir()
    inputs = [images / name] if name == "corrupt.png" else [images / "a.png", images / name]
    with pytest.raises(MetadepthError, match=message):
        predict_paths(checkpoint, inputs, tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*.npy"))  # nothing half-done: the check comes first


def test_cli_predict_of_a_readme_fails_in_one_line(checkpoint, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# not an image")
    result = CliRunner().invoke(app, ["predict", str(checkpoint), str(readme), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"error: {readme}: not an image file (suffix '.md'; accepted: "
                                                  ".png .jpg .jpeg .bmp .tif .tiff files, or folders of them)"]
    assert not (tmp_path / "o").exists()
