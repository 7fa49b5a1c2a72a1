"""What Prefect adds around the stages (flows/orchestration.py): the retry policy, the training concurrency limit,
progress artifacts, task runners; and that all of it stays out of the way outside a Prefect run.

The task-level tests run the real `stage_task` in-process on a tiny project against the session Prefect server,
with the stage body replaced by a recording fake: the policies, not the training, are under test.
"""

from __future__ import annotations

import errno
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
import requests
from tiny_project import ROOT, TINY_MODEL

from flows.orchestration import (
    TRAIN_LIMIT,
    StageProgress,
    artifact_key,
    is_transient,
    make_task_runner,
    publish_report,
    retry_transient,
)
from tasks import tracking
from tasks.io import MetadepthError
from tasks.telemetry import NullTracker, report_progress


def _caused(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


def _http_status(code: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:4200/api/flow_runs/")
    return httpx.HTTPStatusError(f"{code}", request=request, response=httpx.Response(code, request=request))


def _sqlalchemy_locked() -> Exception:
    from sqlalchemy.exc import OperationalError

    return OperationalError("INSERT INTO metrics ...", {}, sqlite3.OperationalError("database is locked"))


def _mlflow_wrapped() -> Exception:
    from mlflow.exceptions import MlflowException

    return _caused(MlflowException("failed to log batch"), _sqlalchemy_locked())


@pytest.mark.parametrize(
    "exc, transient",
    [
        (sqlite3.OperationalError("database is locked"), True),
        (_sqlalchemy_locked(), True),  # how SQLAlchemy (MLflow's and Prefect's stores) reports it
        (_mlflow_wrapped(), True),  # ... wrapped once more by MLflow: found through __cause__
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), True),  # a server not listening yet
        (httpx.ConnectError("All connection attempts failed"), True),  # Prefect's client
        (httpx.ReadTimeout("timed out"), True),
        (TimeoutError(), True),
        (requests.exceptions.ConnectionError("Max retries exceeded with url: /api/2.0/mlflow/runs/create"), True),
        (RuntimeError("API request to http://127.0.0.1:5000 failed: Max retries exceeded"), True),  # MLflow REST
        (_http_status(503), True),  # server starting
        (_http_status(404), False),
        (_http_status(422), False),  # our request is wrong: retrying repeats it
        (MetadepthError("finetune.settings.lr: must be > 0"), False),
        (_caused(MetadepthError("checkpoint not found"), ConnectionError()), False),  # ours, whatever the cause
        (sqlite3.OperationalError("no such table: runs"), False),
        (ValueError("shapes do not match"), False),
        (RuntimeError("CUDA out of memory"), False),
        (KeyError("rmse"), False),
        (OSError(errno.ENOSPC, "No space left on device"), False),
        (FileNotFoundError("data/prepared/loft/train.h5"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_only_transient_errors_are_retried(exc, transient):
    from prefect.states import Failed

    assert is_transient(exc) is transient
    assert retry_transient(None, None, Failed(data=exc)) is transient  # the same through Prefect's failed state


def test_artifact_keys_are_lowercase_dashes():
    assert artifact_key("metadepth-progress", "finetune@meta") == "metadepth-progress-finetune-meta"
    assert artifact_key("metadepth-progress", "meta_init@meta_L8") == "metadepth-progress-meta-init-meta-l8"


def test_outside_a_prefect_run_nothing_is_published_and_nothing_breaks(tmp_path):
    """Plain library use (no flow or task run): the progress hook and the report publisher are silent no-ops."""
    logged = []

    class Recorder(NullTracker):
        def log_metrics(self, metrics, step):
            logged.append((step, metrics))

    progress = StageProgress(Recorder(), "finetune@meta")
    for step in range(3):
        report_progress("finetune meta", step, 3, 0.5, tracker=progress)
    progress.log_metrics({"train_loss": 0.5}, 2)
    progress.finish()
    assert logged == [(2, {"train_loss": 0.5})] and progress._id is None
    publish_report(tmp_path, {"table_rows": [{"model": "a", "rmse": 1.0}], "markdown": "# report"})
    report_progress("finetune meta", 0, 3, 0.5)  # no tracker at all
    report_progress("finetune meta", 0, 3, 0.5, tracker=NullTracker())  # a tracker without the hook


def test_task_runner_switch():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    thread = make_task_runner("thread", 3)
    assert isinstance(thread, ThreadPoolTaskRunner) and thread._max_workers == 3
    remote = make_task_runner("dask", 2, "tcp://127.0.0.1:8786")
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://127.0.0.1:8786"
    local = make_task_runner("dask", 3)
    assert local.cluster_kwargs["threads_per_worker"] == 3 and local.cluster_kwargs["n_workers"] == 1
    for bad in [("thread", 2, "tcp://127.0.0.1:8786"), ("ray", 2, None), ("thread", 0, None)]:
        with pytest.raises(MetadepthError):
            make_task_runner(*bad)


# --- the real stage task, in-process, with a fake stage body ------------------------------------------------------


# What the fake stage bodies return: a real (tiny) checkpoint, because a finetune stage's model is logged from it.
FAKE_CHECKPOINT = "data/checkpoints/none.pt"


def fake_checkpoint(path: Path) -> None:
    from tasks.checkpoints import build_model, save_checkpoint
    from tasks.params import load_params

    model_params = load_params(ROOT / "params.yaml").model.model_dump() | TINY_MODEL
    save_checkpoint(path, build_model(model_params), model_params, step=0, data_hash="0" * 64)


@pytest.fixture(scope="module")
def project(tiny_repo, prefect_api):
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    root = tiny_repo("orch")
    fake_checkpoint(root / FAKE_CHECKPOINT)
    # Prefect read its settings when first imported; point this process at the session server explicitly.
    with temporary_settings(updates={PREFECT_API_URL: prefect_api,
                                     PREFECT_LOCAL_STORAGE_PATH: str(root / ".metadepth" / "results")}):
        yield root


def training_specs(root: Path) -> list:
    from tasks.caching import load_stages
    from tasks.stages import STAGES

    return [s for s in load_stages(root) if STAGES[s.kind].trains]


def run_in_flow(root: Path, specs: list, **task_options):
    """Submit `stage_task` for `specs` at once (2 threads) inside a flow; returns the final states."""
    from prefect import flow
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.pipeline import stage_task

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def harness():
        opts = {"refresh_cache": True, **task_options}
        futures = [stage_task.with_options(task_run_name=s.name, **opts).submit(s.args, str(root)) for s in specs]
        return [f.wait() or f.state for f in futures]

    return harness()


def test_a_transient_failure_is_retried_and_the_second_attempt_succeeds(project, monkeypatch):
    calls = []

    def flaky(params, root, args, tracker):
        calls.append(args)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return {"checkpoint": FAKE_CHECKPOINT, "final_loss": 0.1}

    monkeypatch.setattr("tasks.dispatch.run_stage", flaky)
    spec = training_specs(project)[0]
    [state] = run_in_flow(project, [spec], retry_delay_seconds=0)
    assert state.is_completed() and len(calls) == 2
    assert state.result()["result"]["final_loss"] == 0.1


def test_our_own_errors_are_not_retried(project, monkeypatch):
    calls = []

    def broken(params, root, args, tracker):
        calls.append(args)
        raise MetadepthError("finetune.batch_size 7 cannot be split over 2 processes")

    monkeypatch.setattr("tasks.dispatch.run_stage", broken)
    [state] = run_in_flow(project, training_specs(project)[:1], retry_delay_seconds=0)
    assert state.is_failed() and len(calls) == 1


def _recorder(spans, held, lock):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    def train(params, root, args, tracker):
        start = time.monotonic()
        with get_client(sync_client=True) as client:
            try:
                held.append(client.read_global_concurrency_limit_by_name(TRAIN_LIMIT).active_slots)
            except ObjectNotFound:
                held.append(None)
        time.sleep(1.5)
        with lock:
            spans[" ".join(args)] = (start, time.monotonic())
        return {"checkpoint": FAKE_CHECKPOINT}

    return train


def test_training_stages_never_overlap_on_a_gpu_and_hold_the_global_limit(project, monkeypatch):
    from prefect.client.orchestration import get_client

    spans: dict[str, tuple[float, float]] = {}
    held: list = []
    monkeypatch.setattr("tasks.dispatch.run_stage", _recorder(spans, held, threading.Lock()))
    monkeypatch.setattr("tasks.runtime.trains_on_gpu", lambda runtime: True)
    specs = training_specs(project)[:2]
    assert len(specs) == 2
    states = run_in_flow(project, specs)
    assert all(s.is_completed() for s in states)
    (_, a_end), (b_start, _) = sorted(spans.values())
    assert a_end <= b_start, f"two training stages ran at once: {spans}"
    assert held == [1, 1]  # each ran holding the one slot
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(TRAIN_LIMIT)
    assert limit.limit == 1 and limit.active_slots == 0  # created with one slot, released afterwards


def test_training_stages_run_side_by_side_on_the_cpu(project, monkeypatch):
    spans: dict[str, tuple[float, float]] = {}
    held: list = []
    monkeypatch.setattr("tasks.dispatch.run_stage", _recorder(spans, held, threading.Lock()))
    monkeypatch.setattr("tasks.runtime.trains_on_gpu", lambda runtime: False)
    states = run_in_flow(project, training_specs(project)[:2])
    assert all(s.is_completed() for s in states)
    (_, a_end), (b_start, _) = sorted(spans.values())
    assert b_start < a_end, f"the CPU trainings ran one after the other: {spans}"


def test_progress_artifact_follows_the_training_steps(project, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    spec = training_specs(project)[0]
    key = artifact_key("metadepth-progress", spec.name)
    seen = []

    def read() -> float:
        with get_client(sync_client=True) as client:
            arts = client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
        return float(arts[0].data)

    def train(params, root, args, tracker):
        for step in range(4):
            report_progress("fake", step, 4, 0.1, tracker=tracker)
            if step == 1:
                seen.append(read())
        return {"checkpoint": FAKE_CHECKPOINT}

    monkeypatch.setattr("tasks.dispatch.run_stage", train)
    monkeypatch.setattr(StageProgress, "min_interval", 0.0)
    [state] = run_in_flow(project, [spec])
    assert state.is_completed()
    assert seen == [50.0] and read() == 100.0


def test_a_waiting_training_stage_says_why(project, capsys):
    import contextvars

    from flows.orchestration import training_slot

    held = threading.Event()

    def hold():
        with training_slot():
            held.set()
            time.sleep(1.5)

    other = threading.Thread(target=contextvars.copy_context().run, args=(hold,))
    other.start()
    assert held.wait(60)
    with training_slot(notice_every=0.5):
        pass
    other.join()
    assert f"waiting for a free '{TRAIN_LIMIT}' slot" in capsys.readouterr().out


def test_stage_flow_runs_are_named_after_their_arguments_and_runs_carry_their_identity(project, monkeypatch,
                                                                                       mlflow_uri):
    """`metadepth stage finetune meta 0` and the typed UI deployment (start="meta", seed=0) both give the flow run
    finetune-meta-seed0 (not a random name), and the stage's MLflow run is tagged with what it trained."""
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client

    from flows.pipeline import STAGE_FLOWS
    from flows.serve import typed_stage_flow
    from tasks.params import load_params

    monkeypatch.setattr("tasks.dispatch.run_stage", lambda *a: {"checkpoint": FAKE_CHECKPOINT})
    states = [STAGE_FLOWS["finetune"](["finetune", "meta", "0"], str(project), return_state=True),
              typed_stage_flow("finetune", project, load_params(project / "params.yaml"))(
                  start="meta", seed=0, return_state=True)]
    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(s.state_details.flow_run_id) for s in states]
    assert [(r.name, r.state.type.value) for r in runs] == [("finetune-meta-seed0", "COMPLETED")] * 2
    client = MlflowClient(mlflow_uri)
    [stage_run, *_] = client.search_runs(
        [client.get_experiment_by_name(tracking.experiment_name(project)).experiment_id],
        "tags.stage = 'finetune@meta-0'",
        order_by=["attributes.start_time DESC"])
    tags = stage_run.data.tags
    assert (tags["model"], tags["start"], tags["seed"], tags["dataset"]) == ("ft_meta", "meta", "0", "loft")
    assert stage_run.data.params["model"] == "ft_meta"


def test_progress_lines_only_where_no_bar_is_drawn(capsys):
    """On a terminal the bar shows the loss and no log lines are printed onto it; elsewhere (DVC, CI) they are."""
    report_progress("fake", 9, 10, 0.5, echo=False)
    assert capsys.readouterr().out == ""
    report_progress("fake", 9, 10, 0.5)
    assert capsys.readouterr().out == "fake: step 10/10 (100%), loss 0.5000\n"
