"""The tiny pipeline through `metadepth run` as users run it: the Prefect artifacts it leaves (read back through the
Prefect API), and the same DAG on Dask, on a local cluster the run starts and on an existing one (--dask-address).
Ordered tests over one tiny project."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_pipeline_e2e import ran
from tiny_project import sh

from flows.orchestration import REPORT_KEY, TABLE_KEY, artifact_key

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tiny_repo, prefect_api) -> Path:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root = tiny_repo("orch-e2e")
    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):  # this process reads the artifacts back
        yield root


def latest_artifacts(keys: list[str]) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)),
                                     sort=ArtifactSort.CREATED_DESC)
    latest: dict[str, object] = {}
    for a in arts:
        latest.setdefault(a.key, a)
    return latest


def test_run_publishes_report_and_progress_artifacts(tiny):
    r = sh(tiny, "metadepth", "run")
    assert "task runner: thread" in r.stdout
    from tasks.caching import load_stages

    training = [s.name for s in load_stages(tiny) if s.kind in ("meta_init", "supervised", "finetune")]
    progress_keys = [artifact_key("metadepth-progress", name) for name in training]
    arts = latest_artifacts([TABLE_KEY, REPORT_KEY, *progress_keys])

    table = arts[TABLE_KEY]
    assert table.type == "table" and table.flow_run_id is not None
    rows = json.loads(table.data)  # numbers, one row per protocol x model x column
    assert {row["model"] for row in rows} >= {"ft_scratch", "ft_meta"}, rows
    assert {row["column"] for row in rows} == {"loft (train)", "studio (zero-shot)", "zero-shot mean"}
    assert all(isinstance(row["rmse"], float) and isinstance(row["a1"], float) for row in rows)

    report = arts[REPORT_KEY]
    assert report.type == "markdown" and report.flow_run_id == table.flow_run_id
    summary = (tiny / "reports" / "summary.md").read_text()
    assert report.data.startswith(summary[:summary.index("## Verdicts")]) and "](figures/" not in report.data

    for key in progress_keys:  # every training stage ran, and its progress reached 100%
        assert arts[key].type == "progress" and float(arts[key].data) == 100.0, key
        assert arts[key].task_run_id is not None


def test_dask_local_cluster_runs_the_evaluation_fan_out(tiny):
    for f in (tiny / "data" / "metrics").rglob("*.json"):
        f.unlink()
    r = sh(tiny, "metadepth", "run", "--task-runner", "dask", "--max-parallel", "2")
    assert "task runner: dask" in r.stdout and "LocalCluster" in r.stdout + r.stderr
    assert {n for n in ran(r.stdout) if n.startswith("evaluate")} == {"evaluate"}
    assert len(list((tiny / "data" / "metrics" / "seed0").glob("*.json"))) == 4


CLUSTER = """
import time
from distributed import LocalCluster
cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp://", host="127.0.0.1",
                       dashboard_address=None)
print(cluster.scheduler_address, flush=True)
time.sleep(900)
"""


def test_dask_existing_cluster_by_address(tiny):
    # The cluster is another process, as a user's would be: its worker must not share this test process's state.
    (tiny / "data" / "metrics" / "seed0" / "ft_meta__studio.json").unlink()
    cluster = subprocess.Popen([sys.executable, "-c", CLUSTER], cwd=tiny, stdout=subprocess.PIPE, text=True)
    try:
        address = cluster.stdout.readline().strip()
        assert address.startswith("tcp://127.0.0.1:"), address
        r = sh(tiny, "metadepth", "run", "--task-runner", "dask", "--dask-address", address)
        assert f"at {address}" in r.stdout
    finally:
        cluster.kill()
        cluster.wait()
    assert "evaluate" in ran(r.stdout)
    assert (tiny / "data" / "metrics" / "seed0" / "ft_meta__studio.json").is_file()


def test_dask_address_without_dask_is_a_one_line_error(tiny):
    r = sh(tiny, "metadepth", "run", "--dask-address", "tcp://127.0.0.1:8786", ok=False)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == ["error: --dask-address needs --task-runner dask"]
