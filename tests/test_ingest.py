"""Ingestion of real-dataset formats into prepared shards: the CLI, the pipeline's prepare stage, streaming,
parallel workers, atomicity and quarantine. Fixtures come from tests/test_readers.py (official on-disk formats)."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
from test_readers import nyu_frames, rendered_frame, write_nyu, write_rendered
from tiny_project import ROOT, tiny_params
from typer.testing import CliRunner

from flows.cli import app
from tasks.io import MetadepthError
from tasks.params import load_params, read_raw, validate
from tasks.preprocess.ingest import ingest
from tasks.preprocess.parallel import FramePool
from tasks.preprocess.prepare import prepare
from tasks.preprocess.shards import MANIFEST_COLUMNS, ShardDataset
from tasks.readers import make_reader
from tasks.readers.nyu import NYU_INTRINSICS

SETTINGS = {"height": 24, "width": 32, "min_depth": 0.1, "max_depth": 10.0}


def run_ingest(reader, out, **kw):
    return ingest(reader, out, dataset=out.name, source_label="fixture", **{**SETTINGS, **kw})


def read_split(path):
    with h5py.File(path) as f:
        return {k: f[k][:] for k in f}, dict(f.attrs)


def test_nyu_ingest_writes_the_shard_contract(tmp_path):
    write_nyu(tmp_path / "raw", 6)
    rgb, depth = nyu_frames(6)
    out = tmp_path / "prepared" / "nyuv2"
    summary = ingest(make_reader("nyuv2", tmp_path / "raw", {"val_fraction": 0.25}), out, dataset="nyuv2",
                     source_label="data/raw/nyuv2", height=48, width=64, min_depth=0.1, max_depth=10.0)
    assert summary["frames"] == {"train": 3, "val": 1, "test": 2}
    assert sorted(p.name for p in out.iterdir()) == ["manifest.csv", "test.h5", "train.h5", "val.h5"]
    test, attrs = read_split(out / "test.h5")
    assert test["rgb"].shape == (2, 48, 64, 3) and test["rgb"].dtype == np.uint8
    assert test["depth"].shape == (2, 48, 64) and test["depth"].dtype == np.float32
    # 640x480 -> 64x48 is a pure 1/10 scale: area-averaged RGB and nearest depth of frame 4 (1-based), no transposes.
    np.testing.assert_allclose(test["rgb"][0].astype(float), rgb[3].reshape(48, 10, 64, 10, 3).mean((1, 3)), atol=1)
    assert test["depth"][0, 0, 0] == pytest.approx(depth[3, 5, 5], abs=0.02)
    assert test["depth"][0, -1, 0] > test["depth"][0, 0, -1]  # rows change depth 10x faster than columns
    fx, fy, cx, cy = NYU_INTRINSICS
    np.testing.assert_allclose(test["intrinsics"][0], [fx / 10, fy / 10, (cx + 0.5) / 10 - 0.5, (cy + 0.5) / 10 - 0.5],
                               rtol=1e-5)
    assert attrs["dataset"] == "nyuv2" and attrs["source_format"] == "nyuv2" and attrs["eval_crop"] == "eigen"
    assert list(attrs["eigen_crop"]) == [4, 47, 4, 60]  # rows 45:471, cols 41:601 at 1/10 scale
    for key in ("schema_version", "min_depth", "max_depth", "params_hash"):
        assert key in attrs
    with h5py.File(out / "train.h5") as f:
        assert f["rgb"].chunks[0] == 1
    manifest = pd.read_csv(out / "manifest.csv")
    assert list(manifest.columns) == MANIFEST_COLUMNS and len(manifest) == 6
    assert sorted(manifest.loc[manifest["split"] == "test", "source_id"].astype(int)) == [4, 6]
    assert len(ShardDataset(out / "val.h5")) == 1


def test_rendered_ingest_keeps_rgb_order_and_depth_scale(tmp_path):
    write_rendered(tmp_path / "raw", 4000.0, h=24, w=32)
    rgb, depth = rendered_frame(24, 32)
    run_ingest(make_reader("va", tmp_path / "raw"), tmp_path / "va")
    shard, _ = read_split(tmp_path / "va" / "train.h5")
    np.testing.assert_array_equal(shard["rgb"][0], rgb)  # same size: untouched, red corner stays (255, 0, 0)
    np.testing.assert_allclose(shard["depth"][0], depth, atol=1 / 4000)


def test_parallel_workers_give_the_same_shards_as_inline(tmp_path):
    write_rendered(tmp_path / "raw", 1000.0, scenes=4, frames=3)
    reader = make_reader("replica", tmp_path / "raw")
    run_ingest(reader, tmp_path / "inline", workers=0)
    run_ingest(reader, tmp_path / "parallel", workers=2)
    for split in ("train", "val", "test"):
        a, _ = read_split(tmp_path / "inline" / f"{split}.h5")
        b, _ = read_split(tmp_path / "parallel" / f"{split}.h5")
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "inline" / "manifest.csv"),
                                  pd.read_csv(tmp_path / "parallel" / "manifest.csv"))


def test_workers_stream_a_bounded_window(tmp_path):
    """Frames are submitted only a window ahead of the consumer, so memory cannot grow with the dataset."""
    write_rendered(tmp_path, 1000.0, scenes=3, frames=4)
    reader = make_reader("hm3d", tmp_path)
    samples = reader.samples()
    pulled = 0

    def feed():
        nonlocal pulled
        for s in samples:
            pulled += 1
            yield s

    with FramePool(reader, 16, 16, workers=1, window=3) as pool:
        for consumed, result in enumerate(pool.map(feed()), start=1):
            assert result.error is None
            assert pulled - consumed <= 3
    assert consumed == len(samples) == 12


def test_a_bad_frame_fails_and_leaves_no_partial_output(tmp_path):
    write_rendered(tmp_path / "raw", 1000.0)
    out = tmp_path / "prepared" / "hm3d"
    run_ingest(make_reader("hm3d", tmp_path / "raw"), out)  # a previous good ingest
    before = (out / "train.h5").read_bytes()
    bad = tmp_path / "raw" / "scene2" / "rgb" / "000001.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(MetadepthError, match=r"scene2/rgb/000001\.png: unreadable image"):
        run_ingest(make_reader("hm3d", tmp_path / "raw"), out, workers=1)
    assert [p.name for p in (tmp_path / "prepared").iterdir()] == ["hm3d"]  # no temporary leftovers
    assert (out / "train.h5").read_bytes() == before  # the old output is untouched
    shutil.rmtree(out)
    with pytest.raises(MetadepthError):
        run_ingest(make_reader("hm3d", tmp_path / "raw"), out)
    assert not (tmp_path / "prepared").exists() or not any((tmp_path / "prepared").iterdir())


def test_skip_bad_quarantines_and_lists_bad_frames(tmp_path):
    write_rendered(tmp_path / "raw", 1000.0, frames=3)
    (tmp_path / "raw" / "scene0" / "rgb" / "000001.png").write_bytes(b"\x89PNG truncated")
    (tmp_path / "raw" / "scene1" / "depth" / "000002.png").unlink()
    summary = run_ingest(make_reader("hm3d", tmp_path / "raw"), tmp_path / "out", skip_bad=True)
    assert sum(summary["frames"].values()) == 7 and summary["quarantined"] == 2
    quarantine = pd.read_csv(tmp_path / "out" / "quarantine.csv")
    assert sorted(quarantine["source_id"]) == ["scene0/rgb/000001.png", "scene1/rgb/000002.png"]
    assert quarantine["error"].str.contains("unreadable image|no depth map").all()
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert len(manifest) == 7 and not set(quarantine["source_id"]) & set(manifest["source_id"])


# ---------------------------------------------------------------- params.yaml sources and the prepare stage


def _params(tmp_path, sources: dict, domains: list[str]):
    raw = json.loads(json.dumps(read_raw(ROOT / "params.yaml")))
    raw.update({"domains": domains, "train_domain": domains[0]})
    raw["data"].update({"sources": sources, "height": 20, "width": 30})  # the fixtures' own size: no resampling
    return validate(raw)


def test_prepare_stage_reads_configured_sources(tmp_path):
    write_rendered(tmp_path / "data" / "raw" / "hm3d_renders", 1000.0, frames=3)
    (tmp_path / "data" / "raw" / "hm3d_renders" / "scene0" / "rgb" / "000000.png").write_bytes(b"broken")
    params = _params(tmp_path, {"hm3d": {"format": "hm3d", "path": "hm3d_renders", "skip_bad": True,
                                         "options": {"depth_scale": 500}}}, ["loft", "hm3d"])
    out = prepare(params, tmp_path, "hm3d")
    assert out["path"] == "data/prepared/hm3d" and out["quarantined"] == 1
    shard, attrs = read_split(tmp_path / "data" / "prepared" / "hm3d" / "train.h5")
    assert attrs["source_format"] == "hm3d" and attrs["source_path"] == "data/raw/hm3d_renders"
    _, depth = rendered_frame(20, 30)
    assert shard["depth"][0].max() == pytest.approx(2 * depth.max(), abs=0.01)  # the overridden scale (/500)
    missing = _params(tmp_path, {"va": {"format": "va", "path": "va"}}, ["va"])
    with pytest.raises(MetadepthError, match=r"data/raw/va: not found.*dvc add data/raw/va"):
        prepare(missing, tmp_path, "va")


@pytest.mark.parametrize("source, key", [
    ({"format": "kinect", "path": "x"}, "unknown dataset format 'kinect'"),
    ({"format": "va", "path": "../../etc"}, "stays inside data/"),
    ({"format": "va", "path": "/abs"}, "stays inside data/"),
    ({"format": "va", "path": "va", "options": {"depth_scale": -1}}, "depth_scale"),
    ({"format": "nyuv2", "path": "nyu", "options": {"splitfile": "a"}}, "splitfile: unknown option"),
])
def test_source_params_are_validated_with_the_key_named(tmp_path, source, key):
    with pytest.raises(MetadepthError) as err:
        _params(tmp_path, {"real": source}, ["real"])
    assert "data.sources.real" in str(err.value) and key in str(err.value)


# ---------------------------------------------------------------- the `metadepth data` CLI


@pytest.fixture
def project(tmp_path, monkeypatch):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    tiny_params(tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return tmp_path


def test_cli_ingest_and_inspect(project):
    write_rendered(project / "downloads" / "replica", 1000.0)
    runner = CliRunner()
    res = runner.invoke(app, ["data", "ingest", "downloads/replica", "--format", "replica", "--name", "replica",
                              "--workers", "0", "-o", "depth_scale=2000"])
    assert res.exit_code == 0, res.output
    assert "replica: train 2, val 2, test 2 frames -> data/prepared/replica" in res.output
    params = load_params(project / "params.yaml")
    with h5py.File(project / "data" / "prepared" / "replica" / "test.h5") as f:
        assert f["rgb"].shape[1:3] == (params.data.height, params.data.width)
        assert f["depth"][0].max() < 2.0  # /2000 instead of the preset's /1000
    res = runner.invoke(app, ["data", "ingest", "downloads/replica", "--format", "replica", "--name", "replica"])
    assert res.exit_code == 1 and "--overwrite" in res.output
    res = runner.invoke(app, ["data", "inspect", "replica", "--samples", "2"])
    assert res.exit_code == 0, res.output
    assert "train 2, val 2, test 2 frames" in res.output and "depth (m): min" in res.output
    grid = project / "reports" / "inspect" / "replica.png"
    import cv2

    img = cv2.imread(str(grid))
    assert img is not None and img.shape[0] == params.data.height and img.shape[1] == 4 * 2 * params.data.width
    res = runner.invoke(app, ["data", "formats"])
    assert res.exit_code == 0 and "nyuv2:" in res.output and "hypersim:" in res.output


def test_cli_bad_input_exits_nonzero_with_one_line_and_no_shard(project):
    write_rendered(project / "downloads" / "hm3d", 1000.0)
    (project / "downloads" / "hm3d" / "scene1" / "depth" / "000000.png").write_bytes(b"garbage")
    res = CliRunner().invoke(app, ["data", "ingest", "downloads/hm3d", "-f", "hm3d", "-n", "hm3d", "--workers", "0"])
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "scene1/depth/000000.png" in lines[0]
    assert not (project / "data" / "prepared" / "hm3d").exists()
    assert not any(p.name.startswith(".") for p in (project / "data" / "prepared").iterdir())
    res = CliRunner().invoke(app, ["data", "ingest", "downloads/hm3d", "-f", "hm3d", "-n", "hm3d", "--workers", "0",
                                   "--skip-bad"])
    assert res.exit_code == 0 and "1 bad frames quarantined" in res.output
