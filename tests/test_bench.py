"""`metadepth bench`: the quick run writes a complete, sane bench.json; --only selects sections; the pipeline time
split is computed right from an MLflow record. No timing thresholds: only that every measurement exists, is positive
and that derived ratios agree with the numbers they are derived from."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench import SECTION_NAMES, headlines, parse_only, run_bench
from benchmarks.orchestration import _union_seconds, pipeline_time_share, summarize
from tasks.io import MetadepthError

ROOT = Path(__file__).resolve().parents[1]


def positive(x: object) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    env = {k: v for k, v in os.environ.items() if k != "DVC_ROOT"}
    r = subprocess.run([str(Path(sys.executable).parent / "metadepth"), "bench", "--quick", "--out", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return json.loads(out.read_text()), r.stdout


def test_quick_bench_writes_every_section(quick_report):
    report, stdout = quick_report
    assert report["quick"] is True and report["machine"]["torch_threads"] == 1
    assert list(report["sections"]) == list(SECTION_NAMES)
    for name, section in report["sections"].items():
        assert "error" not in section, f"{name}: {section.get('traceback', section['error'])}"
        assert section["seconds"] >= 0
    assert "metadepth bench --quick" in stdout and "written:" in stdout


def test_reptile_and_loader_numbers_are_sane(quick_report):
    s = quick_report[0]["sections"]
    rep = s["reptile"]
    assert positive(rep["plain_sgd_ms"]) and positive(rep["meta_step_ms"])
    assert rep["ratio_meta_over_sgd"] == pytest.approx(rep["meta_step_ms"] / rep["plain_sgd_ms"], rel=0.01)
    assert rep["within_target"] == (rep["ratio_meta_over_sgd"] <= rep["target_ratio"])

    ld = s["loader"]
    for key in ("loader_samples_per_s", "infinite_batches_samples_per_s", "step_samples_per_s"):
        assert positive(ld[key]), key
    assert ld["headroom_loader_over_step"] == pytest.approx(ld["loader_samples_per_s"] / ld["step_samples_per_s"],
                                                           rel=0.01)
    assert set(ld["random_read_samples_per_s"]) == {"shard", "shard_cached_handles", "png", "jpeg"}
    assert all(positive(v) for v in ld["random_read_samples_per_s"].values())
    assert all(positive(v) for v in ld["bytes_per_frame"].values())


def test_shard_format_covers_every_layout(quick_report):
    sf = quick_report[0]["sections"]["shard_format"]
    layouts = {(r["compression"], r["chunk_frames"]): r for r in sf["layouts"]}
    assert set(layouts) == {(c, k) for c in ("none", "lzf", "gzip") for k in (1, 8)}
    for row in layouts.values():
        assert positive(row["bytes"]) and positive(row["random_read_samples_per_s"])
        assert positive(row["random_read_cached_handles_per_s"])
        assert positive(row["write_frames_per_s"])
    # sizes are deterministic (same frames): gzip must actually compress them
    assert layouts[("gzip", 1)]["bytes"] < layouts[("none", 1)]["bytes"]
    if sf["default"]["chunk_frames"] in (1, 8):
        assert positive(sf["default_size_over_uncompressed"]) and positive(sf["default_read_over_uncompressed"])


def test_generation_inference_and_skips(quick_report):
    s = quick_report[0]["sections"]
    gen = s["generation"]["generator"]
    assert gen["frames"] > 0 and positive(gen["frames_per_s"])
    assert gen["peak_rss_mb"] >= gen["rss_after_imports_mb"] > 0
    runs = s["generation"]["ingest"]["runs"]
    assert [r["workers"] for r in runs] == [0, 1]
    for r in runs:
        assert r["frames"] == runs[0]["frames"] > 0 and positive(r["frames_per_s_per_worker"])
        assert r["main_peak_rss_mb"] >= r["main_rss_after_imports_mb"] > 0
    assert positive(runs[1]["worker_peak_rss_mb"])  # the reader process was seen and measured

    inf = s["inference"]
    assert inf["images"] > 0 and positive(inf["evaluate_images_per_s"]) and positive(inf["predict_images_per_s"])

    orch = s["orchestration"]
    assert orch["skipped"] and isinstance(orch["default_pipeline_share"]["measured"], bool)
    assert s["threads"]["skipped"]
    assert s["compile"]["skipped"]


def test_only_selects_sections_and_rejects_typos(tmp_path):
    import torch

    threads = torch.get_num_threads()
    try:
        report = run_bench(ROOT, quick=True, only="shard_format", out=tmp_path / "b.json")
    finally:
        torch.set_num_threads(threads)
    assert list(json.loads((tmp_path / "b.json").read_text())["sections"]) == ["shard_format"]
    assert "error" not in report["sections"]["shard_format"]
    assert parse_only("compile,reptile") == ["reptile", "compile"]
    with pytest.raises(MetadepthError, match="reptle"):
        parse_only("reptle")
    r = subprocess.run([str(Path(sys.executable).parent / "metadepth"), "bench", "--only", "nope"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "nope" in r.stderr


def test_thread_setting_child_measures_steps():
    """The threads section's per-process measurement (the section itself is skipped by --quick)."""
    import torch

    from benchmarks.cpu_step import child_steps

    threads = torch.get_num_threads()
    try:
        out = child_steps(ROOT, quick=True, threads=1, steps=2)
    finally:
        torch.set_num_threads(threads)
    assert out["threads"] == 1 and len(out["steps_ms"]) == 2 and all(positive(t) for t in out["steps_ms"])
    assert out["step_ms"] == pytest.approx(sorted(out["steps_ms"])[0] / 2 + sorted(out["steps_ms"])[1] / 2, abs=0.1)


def test_pipeline_time_share_from_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    assert _union_seconds([(0, 2000), (1000, 3000), (5000, 6000)]) == 4.0
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert pipeline_time_share(f"sqlite:///{tmp_path / 'missing.db'}") is None
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("metadepth", artifact_location=(tmp_path / "art").as_uri())
    t0 = 1_700_000_000_000
    parent = client.create_run(exp, start_time=t0, tags={"kind": "pipeline"}).info.run_id
    for stage, start, end in [("prepare@loft", 0, 10), ("meta_init@meta", 10, 40), ("finetune@scratch", 40, 80),
                              ("finetune@meta", 45, 90), ("evaluate@ft_meta-loft", 90, 95)]:
        child = client.create_run(exp, start_time=t0 + start * 1000, tags={
            "kind": "stage", "stage": stage, "cache": "miss", "mlflow.parentRunId": parent}).info.run_id
        client.set_terminated(child, end_time=t0 + end * 1000)
    client.set_terminated(parent, end_time=t0 + 100_000)
    share = pipeline_time_share(uri)
    assert share["wall_s"] == 100 and share["training_stages_s"] == 80  # 10..90, overlaps counted once
    assert share["share_outside_training"] == pytest.approx(0.2)
    assert share["stage_seconds_by_kind"] == {"prepare": 10, "meta_init": 30, "finetune": 85, "evaluate": 5}


def test_stage_costs_split_each_process_into_run_and_fixed_cost():
    """The orchestration section's per-stage table and training share, from process walls and MLflow stage runs."""
    walls = {"prepare@loft": 10.0, "prepare@studio": 12.0, "meta_init@meta-0": 50.0, "finetune@meta-0": 40.0,
             "finetune@scratch-0": 30.0, "evaluate": 8.0}
    bodies = {"prepare@loft": 4.0, "prepare@studio": 6.0, "meta_init@meta-0": 44.0, "finetune@meta-0": 35.0,
              "finetune@scratch-0": 25.0, "evaluate": 2.0}
    c = summarize(walls, bodies)
    assert c["stages"] == 6 and c["wall_s"] == 150 and c["training_runs_s"] == 104
    assert c["training_share"] == pytest.approx(104 / 150, abs=1e-4)
    assert c["fixed_s_per_stage"] == pytest.approx((150 - 116) / 6, abs=0.01)
    assert c["per_kind_mean"]["prepare"] == {"n": 2, "wall_s": 11.0, "run_s": 5.0, "fixed_s": 6.0}
    assert c["per_kind_mean"]["finetune"] == {"n": 2, "wall_s": 35.0, "run_s": 30.0, "fixed_s": 5.0}
    with pytest.raises(RuntimeError, match="evaluate"):  # a stage without its MLflow run is not silently 0 s
        summarize(walls, {k: v for k, v in bodies.items() if k != "evaluate"})

    rows = dict(headlines("orchestration", {"stage_costs": c, "cached_metadepth_run_s": 3.2,
                                            "cached_dvc_repro_s": 1.1, "cached_dvc_status_s": 0.9,
                                            "default_pipeline_share": {"measured": False}}))
    assert rows["training share (training stage runs / wall)"] == "0.693"
    assert rows["fixed cost per stage process (s, wall - MLflow run)"] == "5.67"
    assert rows["  prepare x2: wall / run / fixed (s)"] == "11 / 5 / 6"
    assert rows["cached `metadepth run` / `dvc repro` / `dvc status` (s)"] == "3.2 / 1.1 / 0.9"
