"""A run stopped from outside (flows/stopping.py), with real signals sent to real processes (tests/slot_holder.py):
SIGTERM, SIGHUP and Ctrl-C close the MLflow run as KILLED, end the Prefect flow run and task run, release the
`metadepth-train` slot and exit non-zero with one line; a slot left by a SIGKILLed process is taken over at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_project import ROOT

from flows.orchestration import TRAIN_LIMIT


@pytest.fixture(scope="module")
def server(prefect_api, session_dir):
    """This process and the holders talk to the session server and share one PREFECT_HOME (the slot records)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    home = session_dir / "prefect"
    with temporary_settings(updates={PREFECT_API_URL: prefect_api, PREFECT_HOME: str(home)}):
        yield {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(home), "PYTHONPATH": str(ROOT),
               "PYTHONUNBUFFERED": "1"}


def start_holder(env: dict, mode: str, root: Path) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "slot_holder.py"), mode, str(root)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # until it holds the slot
        if line.startswith("HOLDING"):
            return proc, line.split()[1:]
    proc.wait(timeout=60)
    pytest.fail(f"the holder never took the slot: {proc.stderr.read()}")


def slot_records(home: str) -> list[Path]:
    return sorted((Path(home) / "metadepth-slots").glob("*.json"))


def active_slots() -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(TRAIN_LIMIT).active_slots


@pytest.mark.parametrize("sig, prefect_state", [(signal.SIGTERM, "CRASHED"), (signal.SIGHUP, "CRASHED"),
                                                (signal.SIGINT, "CANCELLED")], ids=["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_signal_closes_the_books_and_frees_the_slot(server, tmp_path, mlflow_uri, sig, prefect_state):
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    proc, (flow_run_id, mlflow_run_id, _) = start_holder(server, "stage", tmp_path)
    assert active_slots() == 1 and len(slot_records(server["PREFECT_HOME"])) == 1
    start = time.monotonic()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    print(f"{sig.name}: exited {time.monotonic() - start:.1f} s after the signal")

    assert proc.returncode == 128 + sig
    name = signal.Signals(sig).name
    lines = [line for line in stderr.splitlines() if line.startswith("stopped by")]
    assert lines == [f"stopped by {name}: 1 MLflow run(s) KILLED, Prefect flow run {prefect_state}, 1 training "
                     "slot(s) released; re-run the same command to resume"], stderr
    run = MlflowClient(mlflow_uri).get_run(mlflow_run_id)
    assert run.info.status == "KILLED" and run.data.tags["stopped_by"] == name
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    assert flow_run.state.type.value == prefect_state and name in flow_run.state.message
    assert [t.state.type.value for t in task_runs] == [prefect_state]
    assert active_slots() == 0 and slot_records(server["PREFECT_HOME"]) == []


def test_the_slot_of_a_killed_process_is_taken_over_at_once(server, tmp_path, capsys):
    """SIGKILL leaves no chance to clean up: the lease stays taken on the server (for minutes, until it expires)
    and the holder's record stays on disk. The next run finds its process gone and takes the slot at once."""
    from flows.orchestration import training_slot

    proc, (_, _, pid) = start_holder(server, "slot", tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
    assert active_slots() == 1 and len(slot_records(server["PREFECT_HOME"])) == 1
    start = time.monotonic()
    with training_slot(notice_every=1.0, poll=1.0):
        waited = time.monotonic() - start
        assert active_slots() == 1
    out = capsys.readouterr().out
    print(f"took the slot {waited:.1f} s after asking (the dead holder's lease had 300 s left)")
    assert f"took over the '{TRAIN_LIMIT}' slot held by process {pid}, which no longer exists on this host" in out
    assert "waiting for a free" not in out and waited < 30
    assert active_slots() == 0 and slot_records(server["PREFECT_HOME"]) == []


def test_a_live_holder_is_not_taken_over(server, tmp_path, capsys):
    """A holder that still runs keeps its slot: the next one waits (and says why)."""
    from flows.stopping import take_over_dead_holders

    proc, _ = start_holder(server, "slot", tmp_path)
    try:
        assert take_over_dead_holders(TRAIN_LIMIT) == 0 and active_slots() == 1
    finally:
        proc.send_signal(signal.SIGTERM)  # no stop handling here: the slot stays taken until its record is seen
        proc.communicate(timeout=30)
    assert take_over_dead_holders(TRAIN_LIMIT) == 1 and active_slots() == 0
    assert "took over" in capsys.readouterr().out
