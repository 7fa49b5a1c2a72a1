"""MLflow wrapper: one parent run per pipeline run, one nested run per stage.

Uses MlflowClient with explicit run ids rather than mlflow's thread-local "active run", because the Prefect
pipeline runs stages in worker threads. The store and experiment come from params.yaml's `tracking` section (default:
a SQLite file in the project, gitignored); MLFLOW_TRACKING_URI and METADEPTH_EXPERIMENT, when set, win over it, so a
CI job or one shell can redirect runs without editing a tracked file. Per-step metrics are buffered and written in
batches: one SQLite transaction per step would cost more than the step itself on small models.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from tasks.io import MetadepthError
from tasks.params import TrackingParams
from tasks.params_file import format_error, read_raw

EXPERIMENT = TrackingParams().experiment
PARENT_ENV = "METADEPTH_PARENT_RUN_ID"  # set by `metadepth run`/`repro` so stage processes nest under it
FLUSH_EVERY = 200


class _TrackingSection(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tracking: TrackingParams = TrackingParams()


def settings(root: Path) -> TrackingParams:
    """params.yaml's `tracking` section, validated alone: reading runs must not need the rest of the file valid."""
    path = root / "params.yaml"
    if not path.is_file():
        return TrackingParams()
    try:
        return _TrackingSection.model_validate(read_raw(path) or {}).tracking
    except ValidationError as err:
        raise MetadepthError(format_error(err, str(path), _TrackingSection)) from None


def tracking_home(root: Path) -> Path:
    """Where project-local MLflow files (SQLite store, artifacts) live: the project root, or DVC_ROOT when DVC sets
    it. A queued DVC experiment runs in a temporary copy of the project that is deleted afterwards, and DVC points
    DVC_ROOT at the parent project so that records like these outlive the copy."""
    return Path(os.environ.get("DVC_ROOT") or root).resolve()


def tracking_uri(root: Path) -> str:
    """The MLflow store; a relative SQLite path is taken from the project (tracking_home), wherever the process runs."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or settings(root).mlflow_uri or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri[len("sqlite:///"):].startswith("/"):
        uri = f"sqlite:///{tracking_home(root) / uri[len('sqlite:///'):]}"
    return uri


def experiment_name(root: Path) -> str:
    return os.environ.get("METADEPTH_EXPERIMENT") or settings(root).experiment


def _client(root: Path):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(root))


def _experiment_id(client: Any, root: Path) -> str:
    name = experiment_name(root)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=(tracking_home(root) / "mlartifacts").as_uri())
    except Exception:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "none"
    except (OSError, subprocess.SubprocessError):
        return "none"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Run:
    """One MLflow run; also the `Tracker` the training stages log per-step losses to."""

    def __init__(self, root: Path, name: str, *, params: dict[str, Any] | None = None,
                 tags: dict[str, str] | None = None, parent_id: str | None = None):
        from mlflow.entities import Param, RunTag

        self.client = _client(root)
        self.uri = tracking_uri(root)
        all_tags = {"git_commit": git_commit(root), **(tags or {})}
        if parent_id:
            all_tags["mlflow.parentRunId"] = parent_id
        if os.environ.get("DVC_EXP_NAME"):
            all_tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
        self.experiment_id = _experiment_id(self.client, root)
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        self.id = run.info.run_id
        self._buffer: list[Any] = []
        if params:
            items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.id, params=items[i : i + 100])
        self._tag = RunTag

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self._buffer += [Metric(k, float(v), ts, step) for k, v in metrics.items()]
        if len(self._buffer) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        for i in range(0, len(self._buffer), 1000):
            self.client.log_batch(self.id, metrics=self._buffer[i : i + 1000])
        self._buffer = []

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.id, tags=[self._tag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self.client.log_artifacts(self.id, str(path), artifact_path)
        elif path.exists():
            self.client.log_artifact(self.id, str(path), artifact_path)

    def log_model(self, model: Any, name: str = "model") -> str:
        """Log a metadepth network (switched to eval mode) as an MLflow model, loadable with
        `mlflow.pytorch.load_model("runs:/<id>/<name>")`; returns the MLflow model id.

        Pickled with the `models` package bundled (`code_paths`), so it loads where only torch and timm are
        installed. Requirements are given explicitly: inferring them imports the model in a subprocess and may
        consult the network. The logged model is created here with this run's experiment and id: left to itself,
        MLflow would attach it to the thread's active run or experiment, which our explicit-id runs never set.
        """
        import importlib.metadata

        import mlflow
        import mlflow.pytorch

        import models

        mlflow.set_tracking_uri(self.uri)  # Model.log resolves its store from the process-wide URI
        logged = self.client.create_logged_model(self.experiment_id, name=name, source_run_id=self.id)
        mlflow.pytorch.log_model(model.eval(), name=name, run_id=self.id, model_id=logged.model_id,
                                 serialization_format="pickle", code_paths=[str(Path(models.__file__).parent)],
                                 pip_requirements=[f"{p}=={importlib.metadata.version(p)}" for p in ("torch", "timm")])
        return logged.model_id

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.id, status=status)


def latest_runs(root: Path, n: int, experiment: str | None = None, filter_string: str = "") -> list[Any]:
    """The latest `n` pipeline runs of `experiment` (default: the project's) matching an MLflow filter string.

    None yet in the project's own experiment is a normal state (an empty list); a named experiment that does not
    exist is a typo worth an error.
    """
    client = _client(root)
    name = experiment or experiment_name(root)
    exp = client.get_experiment_by_name(name)
    if exp is None and not experiment:
        return []
    if exp is None:
        raise MetadepthError(f"no MLflow experiment named {name!r} in {tracking_uri(root)}; run `metadepth run` "
                             "first or check --experiment")
    where = " and ".join(["tags.kind = 'pipeline'", *([filter_string] if filter_string else [])])
    return client.search_runs([exp.experiment_id], filter_string=where, order_by=["attributes.start_time DESC"],
                              max_results=n)


def log_report(run: Run, root: Path) -> None:
    """Attach the report to a pipeline run and copy its headline numbers as run metrics, for side-by-side views."""
    reports = root / "reports"
    run.log_artifact(reports, "report")
    summary = reports / "metrics.json"
    if summary.is_file():
        models = json.loads(summary.read_text()).get("models", {})
        run.log_metrics({k: float(v) for k, v in flatten(models).items() if isinstance(v, int | float)}, step=0)
