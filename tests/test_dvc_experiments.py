"""DVC experiments over the real pipeline: `dvc exp run -S` on the tiny project, its metrics in `dvc exp show`,
and the MLflow runs of its stages tagged with the experiment's name (so MLflow and DVC views can be joined)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tiny_project import copy_project, sh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(reproduced, tmp_path_factory) -> Path:
    """A copy of the session's reproduced project: the experiment re-runs only the stages its change reaches."""
    return copy_project(reproduced[0], tmp_path_factory.mktemp("exp") / "project")


def experiments(root: Path) -> dict[str, dict]:
    """`dvc exp show --json` as {experiment name: its data (params, metrics)}."""
    shown = json.loads(sh(root, "dvc", "exp", "show", "--json").stdout)
    return {rev["name"]: rev["data"] for baseline in shown for exp in baseline.get("experiments") or []
            for rev in exp["revs"] if rev.get("name")}


def test_exp_run_records_metrics_and_tags_mlflow_runs(tiny, mlflow_uri):
    sh(tiny, "dvc", "exp", "run", "-n", "inner2", "-S", "meta.settings.inner_steps=2")
    data = experiments(tiny)["inner2"]
    assert data["params"]["params.yaml"]["data"]["meta"]["settings"]["inner_steps"] == 2
    models = data["metrics"]["reports/metrics.json"]["data"]["zero_shot"]
    assert models["ft_meta"]["metric"]["rmse"] > 0

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("metadepth")
    runs = client.search_runs([exp.experiment_id], "tags.dvc_experiment = 'inner2'")
    assert {r.data.tags["stage"] for r in runs} >= {"meta_init@meta-0", "finetune@meta-0", "report"}


@pytest.mark.skipif(not os.environ.get("METADEPTH_TEST_QUEUE"), reason="about 3 min per queued experiment on 2 "
                    "shared cores (6.5 min for this test); set METADEPTH_TEST_QUEUE=1 to run it")
def test_queued_experiments_run_all(tiny, mlflow_uri):
    """Queued experiments run in DVC's temporary copies of the project (a celery worker); stages found unchanged
    there (prepare, init) are restored from DVC's run cache that the experiment above filled. Their stages must
    use the copy, although DVC points DVC_ROOT at the parent (tests/test_tracking.py checks that part fast)."""
    sh(tiny, "dvc", "exp", "run", "--queue", "-n", "q3", "-S", "meta.settings.inner_steps=3")
    sh(tiny, "dvc", "exp", "run", "--queue", "-n", "q1", "-S", "meta.settings.inner_steps=1")
    sh(tiny, "dvc", "exp", "run", "--run-all", "--jobs", "1")
    shown = experiments(tiny)
    for name, steps in [("q3", 3), ("q1", 1)]:
        assert shown[name]["params"]["params.yaml"]["data"]["meta"]["settings"]["inner_steps"] == steps
        assert shown[name]["metrics"]["reports/metrics.json"]["data"]["zero_shot"]["ft_meta"]["metric"]["rmse"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("metadepth")
    for name in ("q3", "q1"):
        runs = client.search_runs([exp.experiment_id], f"tags.dvc_experiment = '{name}'")
        assert "finetune@meta-0" in {r.data.tags["stage"] for r in runs}
