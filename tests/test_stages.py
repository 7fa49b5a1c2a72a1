"""Every stage on a tiny configuration, called directly (no Prefect), checking the DESIGN.md contracts."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from tiny_project import ROOT, tiny_params

from tasks.common import load_checkpoint
from tasks.evaluate import METRICS, run_evaluate
from tasks.finetune import run_finetune
from tasks.initialize import run_init
from tasks.io import MetadepthError
from tasks.meta_init import run_meta_init
from tasks.params import load_params
from tasks.preprocess.prepare import prepare
from tasks.report import run_report


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    tiny_params(root / "params.yaml")
    params = load_params(root / "params.yaml")
    for d in params.data.domains:
        prepare(params, d, root)
    run_init(params, root)
    run_meta_init(params, root)
    for name in params.finetune.inits:
        run_finetune(params, root, name)
    for m in params.evaluate.models:
        for d in params.data.domains:
            run_evaluate(params, root, m, d)
    run_report(params, root)
    return root, params


def test_prepared_shard_contract(project):
    root, params = project
    d = root / "data" / "prepared" / "loft"
    assert sorted(p.name for p in d.iterdir()) == ["manifest.csv", "test.h5", "train.h5", "val.h5"]
    with h5py.File(d / "train.h5") as f:
        assert f["rgb"].dtype == np.uint8 and f["rgb"].shape == (16, 32, 48, 3)
        assert f["depth"].dtype == np.float32 and f["depth"].shape == (16, 32, 48)
        assert f["intrinsics"].shape == (16, 4)
        assert f["rgb"].chunks[0] == 1  # one random sample touches one chunk
        for key in ("schema_version", "dataset", "source_format", "min_depth", "max_depth", "params_hash"):
            assert key in f.attrs
        depth = f["depth"][:]
    valid = depth[depth > 0]
    assert valid.min() >= params.data.min_depth and valid.max() <= params.data.max_depth
    manifest = pd.read_csv(d / "manifest.csv")
    assert list(manifest["split"].value_counts().sort_index()) == [4, 16, 4]
    assert {"source_id", "scene", "valid_fraction", "depth_median"} <= set(manifest.columns)
    assert manifest["source_id"].is_unique


def test_prepare_is_deterministic(project, tmp_path):
    root, params = project
    prepare(params, "loft", tmp_path)
    with h5py.File(tmp_path / "data/prepared/loft/test.h5") as a, h5py.File(root / "data/prepared/loft/test.h5") as b:
        assert np.array_equal(a["rgb"][:], b["rgb"][:]) and np.array_equal(a["depth"][:], b["depth"][:])


def test_checkpoint_contract_and_shared_initialisation(project):
    root, params = project
    ck = root / "data" / "checkpoints"
    init, meta, ft_s, ft_m = (load_checkpoint(ck / f"{n}.pt") for n in ("init", "meta", "ft_scratch", "ft_meta"))
    for c in (meta, ft_s, ft_m):
        assert c["model_params"] == init["model_params"]
        assert len(c["data_hash"]) == 64
    assert meta["step"] == params.meta.steps and ft_s["step"] == params.finetune.steps
    # meta-learning moved the weights away from the shared random init; both fine-tunes moved theirs
    key = next(k for k in init["model"] if k.endswith("weight"))
    assert not torch.equal(init["model"][key], meta["model"][key])
    assert not torch.equal(init["model"][key], ft_s["model"][key])
    assert not torch.equal(ft_s["model"][key], ft_m["model"][key])
    assert not list(ck.glob("*.resume.pt")), "resume files are removed on success"


def test_metrics_files(project):
    root, params = project
    for m in params.evaluate.models:
        for d in params.data.domains:
            r = json.loads((root / "data" / "metrics" / f"{m}__{d}.json").read_text())
            assert set(r["metrics"]) == set(METRICS)
            assert r["n_images"] == params.data.test_size and r["n_valid_pixels"] > 0
            assert r["protocol"]["max_depth"] == params.evaluate.max_depth
            assert 0 <= r["metrics"]["a1"] <= r["metrics"]["a2"] <= r["metrics"]["a3"] <= 1


def test_report(project):
    root, params = project
    summary = json.loads((root / "reports" / "metrics.json").read_text())
    assert set(summary["models"]) == set(params.evaluate.models)
    assert summary["models"]["ft_scratch"]["studio"]["rmse_change_pct"] == 0.0
    md = (root / "reports" / "summary.md").read_text()
    assert "loft (train)" in md and "meta-init + fine-tune" in md and "zero-shot mean" in md
    for png in ("loss_curves.png", "qualitative.png"):
        assert (root / "reports" / "figures" / png).read_bytes()[:4] == b"\x89PNG"
    curve = pd.read_csv(root / "data" / "curves" / "ft_meta.csv")
    assert list(curve["step"]) == list(range(params.finetune.steps))


def test_finetune_is_reproducible(project, tmp_path):
    """Same seed and params give bit-identical weights on CPU (and the resume logic does not interfere)."""
    root, params = project
    (tmp_path / "data" / "checkpoints").mkdir(parents=True)
    (tmp_path / "data" / "prepared").symlink_to(root / "data" / "prepared", target_is_directory=True)
    shutil.copy(root / "data" / "checkpoints" / "init.pt", tmp_path / "data" / "checkpoints")
    run_finetune(params, tmp_path, "scratch")
    a = load_checkpoint(tmp_path / "data/checkpoints/ft_scratch.pt")["model"]
    b = load_checkpoint(root / "data/checkpoints/ft_scratch.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_input_is_a_clear_error(tmp_path):
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(MetadepthError, match="init.pt: checkpoint not found"):
        run_meta_init(params, tmp_path)
    with pytest.raises(MetadepthError, match="not in data.domains"):
        prepare(params, "mars", tmp_path)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MetadepthError, match="not a loadable checkpoint"):
        load_checkpoint(bad)
    torch.save({"some": torch.zeros(1)}, bad)
    with pytest.raises(MetadepthError, match="not a metadepth checkpoint"):
        load_checkpoint(bad)
