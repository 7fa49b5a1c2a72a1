"""The tiny pipeline end to end, through the real CLI: `dvc repro` (via `metadepth repro`), `metadepth run`,
Prefect caching shared with DVC, and the MLflow record. Ordered tests over one tiny project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_project import copy_project, sh, tiny_params

pytestmark = pytest.mark.slow

# tiny project: 2 domains, finetune.starts = [scratch, meta, sup], one evaluate stage -> 10 stages
FT_AND_AFTER = {"finetune@scratch-0", "finetune@meta-0", "finetune@sup-0", "evaluate", "report"}


@pytest.fixture(scope="module")
def tiny(reproduced, tmp_path_factory) -> Path:
    """A copy of the session's reproduced project, for the tests below that change it."""
    return copy_project(reproduced[0], tmp_path_factory.mktemp("e2e") / "project")


def changed_stages(root: Path) -> set[str]:
    return set(json.loads(sh(root, "dvc", "status", "--json").stdout or "{}"))


def ran(out: str) -> set[str]:
    line = next(ln for ln in out.splitlines() if ln.startswith("ran: "))
    return set(line[5:].split()) - {"-"}


def test_dvc_repro_runs_the_pipeline(reproduced):
    tiny, stdout = reproduced  # the session's one `metadepth repro` of a fresh tiny project
    assert "report: reports/summary.md" in stdout and "| meta-init + fine-tune |" in stdout
    assert (tiny / "reports" / "figures" / "qualitative.png").is_file()
    assert changed_stages(tiny) == set()
    metrics = sorted((tiny / "data/metrics").rglob("*.json"))
    assert len(metrics) == 4  # 2 models x 2 domains x 1 seed, under data/metrics/seed0/
    for shared in ["dvc.lock", *map(str, (tiny / "reports").glob("*.*")), *map(str, metrics)]:
        assert str(tiny) not in (tiny / shared).read_text(errors="ignore"), shared
    again = sh(tiny, "dvc", "repro")
    assert "Data and pipelines are up to date." in again.stdout


def test_prefect_run_hits_the_cache_dvc_filled(tiny):
    r = sh(tiny, "metadepth", "run")  # nothing changed: it asks DVC and starts nothing
    assert r.stdout.startswith("up to date: dvc status finds all 10 stages unchanged")
    r = sh(tiny, "metadepth", "run", "-S", "finetune.settings.log_every=1")  # a no-op override runs the Prefect flow
    assert ran(r.stdout) == set() and "cache hits: 10" in r.stdout


def test_finetune_param_change_reruns_only_dependents(tiny):
    tiny_params(tiny / "params.yaml", finetune={"steps": 2, "batch_size": 4, "settings": {"log_every": 1}})
    # DVC sees exactly the fine-tuning stages changed (prepare, init, meta_init untouched) ...
    assert changed_stages(tiny) == {"finetune@scratch-0", "finetune@meta-0", "finetune@sup-0"}
    # ... and the pipeline re-runs them and what follows, nothing else (-S with an unchanged value is a no-op)
    r = sh(tiny, "metadepth", "run", "-S", "finetune.settings.log_every=1")
    assert ran(r.stdout) == FT_AND_AFTER
    assert changed_stages(tiny) == set()  # outputs committed to DVC: `dvc repro` has nothing to do
    assert "Data and pipelines are up to date." in sh(tiny, "dvc", "repro").stdout
    assert sh(tiny, "metadepth", "run").stdout.startswith("up to date:")


def test_deleted_output_is_a_cache_miss(tiny):
    (tiny / "data" / "metrics" / "seed0" / "ft_meta__studio.json").unlink()
    r = sh(tiny, "metadepth", "run")
    assert ran(r.stdout) == {"evaluate"}  # the rewritten file is identical, so the report is a cache hit
    assert (tiny / "data" / "metrics" / "seed0" / "ft_meta__studio.json").is_file()


def test_mlflow_records_parent_and_nested_runs(tiny, mlflow_uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("metadepth")
    parents = client.search_runs([exp.experiment_id], "tags.kind = 'pipeline'")
    assert len(parents) >= 4
    latest = parents[0]
    assert latest.data.tags["git_commit"] != "none" and len(latest.data.tags["params_hash"]) == 16
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{latest.info.run_id}'")
    assert len(children) == 10  # one nested run per stage, cache hits included
    ft = client.search_runs([exp.experiment_id], "tags.stage = 'finetune@meta-0' and tags.cache != 'hit'")
    assert ft and client.get_metric_history(ft[0].info.run_id, "train_loss")
    assert any(k.startswith("zero_shot.") and k.endswith(".rmse") for k in latest.data.metrics)
    for run in [latest, *children]:  # no absolute local path leaks into what is shared
        assert not any(str(tiny) in str(v) for v in {**run.data.tags, **run.data.params}.values())
    arts = [a.path for a in client.list_artifacts(latest.info.run_id, "report")]
    assert "report/summary.md" in arts


def test_compare_shows_differing_params(tiny):
    r = sh(tiny, "metadepth", "compare", "-n", "4")
    assert "finetune.steps" in r.stdout and "zero_shot.ft_meta.metric.rmse" in r.stdout


def test_user_error_is_one_line(tiny):
    r = sh(tiny, "metadepth", "run", "-S", "meta.settings.inner_steps=0", ok=False)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "meta.settings.inner_steps" in r.stderr


CLIENT = """
import sys, time
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

with get_client(sync_client=True) as client:
    deadline = time.time() + 180
    while True:
        try:
            client.read_deployment_by_name("pipeline/metadepth")
            break
        except Exception:
            if time.time() > deadline:
                sys.exit("deployment never registered")
            time.sleep(1)
run = run_deployment("pipeline/metadepth", parameters={"overrides": ["evaluate.batch_size=2"]}, timeout=600)
print("STATE", run.state.type.value)
"""


def test_served_pipeline_runs_from_the_prefect_api(tiny):
    """`metadepth serve` registers the flows; a run started through the API (as the UI does) completes."""
    env = {**os.environ, "PYTHONPATH": str(tiny), "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    server = subprocess.Popen(["metadepth", "serve"], cwd=tiny, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        r = sh(tiny, sys.executable, "-c", CLIENT)
        assert "STATE COMPLETED" in r.stdout, r.stdout + r.stderr
        assert "batch_size: 2" in (tiny / "params.yaml").read_text()  # the run's parameter reached params.yaml
        assert changed_stages(tiny) == set()
    finally:
        server.terminate()
        server.wait(timeout=30)
