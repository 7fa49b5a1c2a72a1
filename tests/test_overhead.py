"""The fixed cost per stage: `metadepth stage` processes share one project-local Prefect server (no ephemeral server
per process) that stops once idle, and an unchanged project's `metadepth run` asks DVC and starts nothing.

On a tiny project, through the real CLI, as plain `dvc repro` runs the stages. No timed assertions: the idle stop is
waited for with a generous deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from ruamel.yaml import YAML
from tiny_project import make_tiny_project

from flows.server import STATE, USERS, healthy, process_alive, read_state, shared_server

IDLE_S = 20  # longer than the gap between two stage processes on a loaded machine; the test waits it out


def _env(project: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI", "DVC_ROOT")}
    return {**env, "PYTHONPATH": str(project), "OMP_NUM_THREADS": "1", **extra}


def _metadepth(project: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    r = subprocess.run(["metadepth", *args], cwd=project, env=_env(project, **extra), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"metadepth {' '.join(args)}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r


def _wait_gone(pid: int, deadline_s: float) -> bool:
    end = time.time() + deadline_s
    while process_alive(pid) and time.time() < end:
        time.sleep(0.5)
    return not process_alive(pid)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory):
    """Both prepare stages of a tiny project run as two `metadepth stage` processes, with no PREFECT_API_URL."""
    project = make_tiny_project(tmp_path_factory.mktemp("overhead") / "project")
    runs = []
    for domain in ("loft", "studio"):
        runs.append(_metadepth(project, "stage", "prepare", domain, METADEPTH_SERVER_IDLE_S=str(IDLE_S)))
        runs[-1].state = json.loads((project / ".metadepth" / STATE).read_text())
    yield project, runs
    state = read_state(project)
    if state:  # a failed assertion must not leave the server behind
        os.kill(state["pid"], 15)


def test_stage_processes_share_one_server_that_stops_when_idle(staged):
    project, (first, second) = staged
    assert "prepare@loft: done" in first.stdout and "prepare@studio: done" in second.stdout
    for r in (first, second):  # neither process started a server of its own
        assert "temporary server" not in r.stdout + r.stderr
    assert first.state == second.state  # the second process found the first one's server
    state = first.state
    assert healthy(state["url"])
    request = urllib.request.Request(f"{state['url']}/flow_runs/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:  # both stage flows ran on it
        assert {"prepare-loft", "prepare-studio"} <= {r["name"] for r in json.load(response)}
    assert not list((project / ".metadepth" / USERS).glob("*"))  # both unregistered on exit

    assert _wait_gone(state["pid"], IDLE_S + 120), "the shared server's keeper did not stop after its idle time"
    assert not (project / ".metadepth" / STATE).exists() and not healthy(state["url"])


def test_server_in_use_is_kept_and_a_user_api_url_wins(tmp_path, monkeypatch):
    (tmp_path / ".metadepth").mkdir()
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("METADEPTH_SERVER_IDLE_S", "1")
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    with shared_server(tmp_path) as url:
        assert os.environ["PREFECT_API_URL"] == url
        state = read_state(tmp_path)
        time.sleep(3 * 2.0 + 1)  # several keeper polls past the idle time: this process still uses it
        assert healthy(url) and read_state(tmp_path) == state
        monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
        with shared_server(tmp_path) as inner:  # a PREFECT_API_URL already set always wins
            assert inner == "http://127.0.0.1:1/api"
        monkeypatch.delenv("PREFECT_API_URL")
    assert "PREFECT_API_URL" not in os.environ
    assert _wait_gone(state["pid"], 120) and not healthy(state["url"])


def test_unchanged_project_run_starts_nothing(staged):
    """`metadepth run` on a project DVC finds up to date: one line, exit 0, no Prefect server, no MLflow run."""
    project, _ = staged
    yaml = YAML()
    dvc_yaml = yaml.load((project / "dvc.yaml").read_text())
    dvc_yaml["stages"] = {"prepare": dvc_yaml["stages"]["prepare"]}  # the stages that ran
    with open(project / "dvc.yaml", "w") as f:
        yaml.dump(dvc_yaml, f)
    subprocess.run(["dvc", "commit", "-f", "-q"], cwd=project, env=_env(project), check=True, timeout=300)
    (project / ".metadepth" / STATE).unlink(missing_ok=True)
    runs_before = _mlflow_runs(project)

    r = _metadepth(project, "run")
    assert r.stdout.strip().splitlines() == [r.stdout.strip()] and r.stdout.startswith("up to date: ")
    assert "all 2 stages" in r.stdout and "data/" in r.stdout
    assert not (project / ".metadepth" / STATE).exists()  # no Prefect server started
    assert _mlflow_runs(project) == runs_before

    from flows.cli.pipeline import up_to_date

    assert up_to_date(project) == 2
    (project / "tasks" / "preprocess" / "prepare.py").write_text("# changed\n", encoding="utf-8")
    assert up_to_date(project) is None  # a changed dependency: the full run, which re-runs that stage


def _mlflow_runs(project: Path) -> int:
    import sqlite3

    with sqlite3.connect(project / "mlflow.db") as db:
        return db.execute("select count(*) from runs").fetchone()[0]
