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

from tasks.checkpoints import load_checkpoint
from tasks.evaluate import METRICS, run_evaluate
from tasks.finetune import run_finetune
from tasks.initialize import run_init
from tasks.io import MetadepthError
from tasks.meta_init import run_meta_init
from tasks.params import load_params
from tasks.preprocess.prepare import prepare
from tasks.report import run_report


@pytest.fixture(scope="module")
def project(tiny_project):
    return tiny_project(upto="report")


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
    prepare(params, tmp_path, "loft")
    with h5py.File(tmp_path / "data/prepared/loft/test.h5") as a, h5py.File(root / "data/prepared/loft/test.h5") as b:
        assert np.array_equal(a["rgb"][:], b["rgb"][:]) and np.array_equal(a["depth"][:], b["depth"][:])


def test_checkpoint_contract_and_shared_initialisation(project):
    root, params = project
    ck = root / "data" / "checkpoints" / "seed0"
    init, meta, ft_s, ft_m = (load_checkpoint(ck / f"{n}.pt") for n in ("scratch", "meta", "ft_scratch", "ft_meta"))
    for c in (meta, ft_s, ft_m):
        assert c["model_params"] == init["model_params"]
        assert len(c["data_hash"]) == 64
    assert meta["step"] == params.meta.settings.steps and ft_s["step"] == params.finetune.steps
    # meta-learning moved the weights away from the shared random init; both fine-tunes moved theirs
    key = next(k for k in init["model"] if k.endswith("weight"))
    assert not torch.equal(init["model"][key], meta["model"][key])
    assert not torch.equal(init["model"][key], ft_s["model"][key])
    assert not torch.equal(ft_s["model"][key], ft_m["model"][key])
    assert not list(ck.glob("*.resume.pt")), "resume files are removed on success"


def test_metrics_files(project):
    root, params = project
    for m in params.evaluate.models:
        for d in params.domains:
            r = json.loads((root / "data" / "metrics" / "seed0" / f"{m}__{d}.json").read_text())
            assert r["schema_version"] == 2 and (r["model"], r["dataset"], r["seed"]) == (m, d, 0)
            assert r["n_images"] == params.data.test_size
            assert set(r["protocols"]) == set(params.evaluate.protocols) == {"metric", "median"}
            for name, p in r["protocols"].items():
                assert set(p["metrics"]) == set(METRICS) and p["n_valid_pixels"] > 0
                assert p["protocol"]["max_depth"] == params.evaluate.max_depth
                assert p["protocol"]["align"] == params.evaluate.protocols[name]
                assert 0 <= p["metrics"]["a1"] <= p["metrics"]["a2"] <= p["metrics"]["a3"] <= 1
                assert len(p["per_image_rmse"]) == r["n_images"]


def test_report(project):
    root, params = project
    summary = json.loads((root / "reports" / "metrics.json").read_text())
    assert set(params.evaluate.models) <= set(summary["zero_shot"])
    assert set(summary["claims"]) == set(params.report.claims)
    detail = json.loads((root / "reports" / "metrics_detail.json").read_text())
    assert detail["protocols"]["metric"]["models"]["ft_scratch"]["columns"]["studio"]["rmse_change_pct"] is None
    md = (root / "reports" / "summary.md").read_text()
    assert "loft (train)" in md and "meta-init + fine-tune" in md and "zero-shot mean" in md
    assert "pretrained-initialisation baseline: not run" in md
    for png in ("loss_curves.png", "qualitative.png"):
        assert (root / "reports" / "figures" / png).read_bytes()[:4] == b"\x89PNG"
    curve = pd.read_csv(root / "data" / "curves" / "seed0" / "ft_meta.csv")
    assert list(curve["step"]) == list(range(params.finetune.steps))


def test_finetune_is_reproducible(project, tmp_path, single_thread):
    """Same seed and params give bit-identical weights on CPU (and the resume logic does not interfere); with one
    thread, as the template ran, since thread counts round differently."""
    root, params = project
    (tmp_path / "data" / "checkpoints" / "seed0").mkdir(parents=True)
    (tmp_path / "data" / "prepared").symlink_to(root / "data" / "prepared", target_is_directory=True)
    shutil.copy(root / "data" / "checkpoints" / "seed0" / "scratch.pt", tmp_path / "data" / "checkpoints" / "seed0")
    run_finetune(params, tmp_path, "scratch")
    a = load_checkpoint(tmp_path / "data/checkpoints/seed0/ft_scratch.pt")["model"]
    b = load_checkpoint(root / "data/checkpoints/seed0/ft_scratch.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_input_is_a_clear_error(tmp_path):
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(MetadepthError, match="scratch.pt: checkpoint not found"):
        run_meta_init(params, tmp_path)
    with pytest.raises(MetadepthError, match="not in domains"):
        prepare(params, tmp_path, "mars")


def test_meta_variant_is_an_ablation_with_its_own_settings(project, tmp_path):
    """A meta.variants entry runs Reptile with its overrides and writes its own checkpoint and curve."""
    root, _ = project
    tiny_params(root / "params.yaml", meta={"settings": {"steps": 2, "batch_size": 4, "log_every": 1}, "variants": {
        "meta": {}, "meta_l1_no_task_aug": {"inner_steps": 1, "task_augment": {"mixup": False,
                                                                              "channel_shuffle": False}}}})
    params = load_params(root / "params.yaml")
    assert params.meta.variant("meta_l1_no_task_aug").inner_steps == 1
    run_meta_init(params, root, "meta_l1_no_task_aug")
    ck = load_checkpoint(root / "data" / "checkpoints" / "seed0" / "meta_l1_no_task_aug.pt")
    assert ck["info"]["variant"] == "meta_l1_no_task_aug" and ck["info"]["inner_steps"] == 1
    curve = pd.read_csv(root / "data" / "curves" / "seed0" / "meta_l1_no_task_aug.csv")
    assert curve["loss_task_augment"].isna().all()  # task augmentation really off
    assert pd.read_csv(root / "data" / "curves" / "seed0" / "meta.csv")["loss_task_augment"].notna().all()


def test_ablation_is_a_report_row(project):
    """An enabled ablation is fine-tuned, evaluated and shown beside the paper's setting and the baseline."""
    root, _ = project
    variants = {"meta": {}, "meta_l1_no_task_aug": {"inner_steps": 1, "task_augment": {
        "mixup": False, "channel_shuffle": False}}}
    tiny_params(root / "params.yaml", meta={"settings": {"steps": 2, "batch_size": 4, "log_every": 1},
                                            "variants": variants},
                finetune={"steps": 2, "batch_size": 4, "settings": {"log_every": 1}, "starts": [
                    "scratch", "meta", "meta_l1_no_task_aug"]},
                evaluate={"batch_size": 4, "models": ["ft_scratch", "ft_meta", "ft_meta_l1_no_task_aug"]})
    params = load_params(root / "params.yaml")
    if not (root / "data/checkpoints/seed0/meta_l1_no_task_aug.pt").exists():
        run_meta_init(params, root, "meta_l1_no_task_aug")
    run_finetune(params, root, "meta_l1_no_task_aug")
    for d in params.domains:
        run_evaluate(params, root, "ft_meta_l1_no_task_aug", d)
    out = run_report(params, root)
    rows = {r["model"] for r in out["table_rows"] if r["protocol"] == "metric"} - {"scratch", "constant"}
    assert rows == {"ft_scratch", "ft_meta", "ft_meta_l1_no_task_aug"} and "meta_l1_no_task_aug" in out["table"]
    assert "ablations: none enabled" not in (root / "reports" / "summary.md").read_text()
    summary = json.loads((root / "reports" / "metrics.json").read_text())
    assert "ft_meta_l1_no_task_aug" in summary["zero_shot"]


def test_pretrained_init_needs_a_local_file(project, tmp_path):
    from tasks.params import read_raw, validate

    raw = json.loads(json.dumps(read_raw(project[0] / "params.yaml")))
    raw["init"]["kinds"] = ["scratch", "pretrained"]
    with pytest.raises(MetadepthError, match="init: .*pretrained_path is not set"):
        validate(raw)
    raw["init"]["pretrained_path"] = str(tmp_path / "nope.pth")
    with pytest.raises(MetadepthError, match="nope.pth: not found"):
        run_init(validate(raw), tmp_path, "pretrained")
    # a real local file: the encoder weights of a model saved by timm itself
    import timm

    weights = tmp_path / "encoder.pth"
    source = timm.create_model(raw["model"]["encoder"], pretrained=False)
    torch.save(source.state_dict(), weights)
    raw["init"]["pretrained_path"] = str(weights)
    run_init(validate(raw), tmp_path, "pretrained")
    ck = load_checkpoint(tmp_path / "data" / "checkpoints" / "seed0" / "pretrained.pt")
    key = next(k for k in ck["model"] if k.startswith("encoder.") and k.endswith("weight"))
    assert "pretrained_path" not in ck["model_params"]
    flat = {k.replace("_", "."): v for k, v in source.state_dict().items()}
    assert any(torch.equal(ck["model"][key], v) for v in flat.values())


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MetadepthError, match="not a loadable checkpoint"):
        load_checkpoint(bad)
    torch.save({"some": torch.zeros(1)}, bad)
    with pytest.raises(MetadepthError, match="not a metadepth checkpoint"):
        load_checkpoint(bad)


def test_stage_params_match_dvc_yaml():
    """Each dvc.yaml stage's params are its registry entry's (plus, for meta_init, the variant's own overrides):
    DVC's hash, the Prefect cache key, the shard's params hash and the resume key then see the same sections."""
    import yaml

    from tasks.stages import STAGES

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for kind, stage in STAGES.items():
        listed = (stages[kind].get("do") or stages[kind])["params"]
        extra = ["meta.variants.${item.variant}"] if kind == "meta_init" else []
        assert sorted(listed) == sorted([*stage.params, *extra]), kind
        assert len(listed) <= 11, kind  # whole sections, not key by key


def test_model_that_does_not_fit_its_encoder_is_one_clear_error(project, tmp_path):
    from tasks.params import read_raw, validate

    raw = json.loads(json.dumps(read_raw(project[0] / "params.yaml")))
    raw["model"]["encoder_levels"] = 2  # fewer levels, same five decoder widths
    with pytest.raises(MetadepthError, match=r"params.yaml: model: .*needs \d decoder_channels"):
        run_init(validate(raw), tmp_path, "scratch")
    assert not (tmp_path / "data").exists()  # nothing half-written
