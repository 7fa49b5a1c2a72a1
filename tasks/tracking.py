"""MLflow wrapper: one parent run per pipeline run, one nested run per stage.

Uses MlflowClient with explicit run ids rather than mlflow's thread-local "active run", because the Prefect
pipeline runs stages in worker threads. The store and experiment come from params.yaml's `tracking` section (default:
a SQLite file in the project, gitignored); MLFLOW_TRACKING_URI and METADEPTH_EXPERIMENT, when set, win over it, so a
CI job or one shell can redirect runs without editing a tracked file. Per-step metrics are buffered and written in
batches: one SQLite transaction per step would cost more than the step itself on small models.

Runs carry what MLflow needs to group and chart them: MLflow's standard source tags (git commit, command, type) and
the identity of what ran (model, dataset, seed, start) as both tags and params. Every run this process opened and
has not ended is known (`close_open_runs`), so a run stopped by a signal is closed as KILLED rather than left RUNNING.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from tasks.io import MetadepthError
from tasks.params import TrackingParams
from tasks.params_file import format_error, read_raw

EXPERIMENT = TrackingParams().experiment
PARENT_ENV = "METADEPTH_PARENT_RUN_ID"  # set by `metadepth run`/`repro` so stage processes nest under it
FLUSH_EVERY = 200
# What a stage argument (the names of tasks/stages.py's Arg) says about the run: its identity key.
IDENTITY_KEYS = {"DATASET": "dataset", "SEED": "seed", "KIND": "model", "VARIANT": "model", "MODEL": "model",
                 "START": "start"}
_OPEN: dict[str, Run] = {}  # runs of this process not yet ended, by id
_OPEN_LOCK = threading.Lock()


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


def source_tags(root: Path) -> dict[str, str]:
    """MLflow's standard source tags, which fill the run page's Source and Git commit fields: the command that ran
    (`metadepth stage finetune meta 0`), of type LOCAL, at this checkout's commit."""
    argv = ["metadepth", *sys.argv[1:]] if Path(sys.argv[0]).name == "metadepth" else sys.argv
    commit = git_commit(root)
    tags = {"mlflow.source.name": shlex.join(argv), "mlflow.source.type": "LOCAL", "git_commit": commit}
    if commit != "none":
        tags["mlflow.source.git.commit"] = commit
    return tags


def identity(named_args: dict[str, str], **known: str) -> dict[str, str]:
    """What a run is about, from its stage's named arguments (e.g. {"START": "meta", "SEED": "0"}): the `model`,
    `dataset`, `seed` and `start` keys MLflow groups and charts runs by. A fine-tune from START is model ft_START
    (docs/contracts.md); `known` adds what the arguments do not say (e.g. the training dataset)."""
    out = {IDENTITY_KEYS[k]: str(v) for k, v in named_args.items() if k in IDENTITY_KEYS}
    if "start" in out and "model" not in out:
        out["model"] = f"ft_{out['start']}"
    if out.get("model", "").startswith("ft_"):
        out.setdefault("start", out["model"][len("ft_"):])
    return {**out, **{k: str(v) for k, v in known.items() if v is not None}}


def end_status(exc: BaseException) -> str:
    """The MLflow status of a run ended by `exc`: FAILED for an error of the code (an Exception), KILLED for
    anything that stopped it from outside (Ctrl-C, a signal, SystemExit, a cancellation)."""
    return "FAILED" if isinstance(exc, Exception) else "KILLED"


def artifact_name(name: str) -> str:
    """A run name as an MLflow model/artifact name: letters, digits, `_`, `.` and `-` only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "model"


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
                 tags: dict[str, str] | None = None, parent_id: str | None = None,
                 identity: dict[str, str] | None = None):
        """`identity` (see `identity()`) is logged as tags and as params, so both filters and charts can use it."""
        from mlflow.entities import Param, RunTag

        self.client = _client(root)
        self.uri = tracking_uri(root)
        self.name = name
        params = {**flatten(params or {}), **(identity or {})}  # flat: the `model` section stays apart
        all_tags = {**source_tags(root), **(identity or {}), **(tags or {})}
        if parent_id:
            all_tags["mlflow.parentRunId"] = parent_id
        if os.environ.get("DVC_EXP_NAME"):
            all_tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
        self.experiment_id = _experiment_id(self.client, root)
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        self.id = run.info.run_id
        with _OPEN_LOCK:
            _OPEN[self.id] = self
        self._buffer: list[Any] = []
        if params:
            items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.id, params=items[i : i + 100])
        self._tag = RunTag

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
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

    def log_model(self, model: Any, name: str | None = None, registered_name: str | None = None,
                  example_size: tuple[int, int] = (32, 32)) -> str:
        """Log a metadepth network (switched to eval mode) as an MLflow model named after this run (`name`, default
        the run name as an artifact name), loadable with `mlflow.pytorch.load_model("runs:/<id>/<name>")`; returns
        the MLflow model id. With `registered_name`, also a new version of that model in the registry of the
        tracking store (the project's SQLite file: no registry server).

        The signature and input example are a small RGB batch (1, 3, H, W) float32 in [0, 1] and the full-resolution
        depth it gives (the first of the scales the network returns; `load_model` gives the whole network). Pickled
        with the `models` package bundled (`code_paths`), so it loads where only torch and timm are installed.
        Requirements are given explicitly: inferring them imports the model in a subprocess and may consult the
        network. The logged model is created here with this run's experiment and id: left to itself, MLflow would
        attach it to the thread's active run or experiment, which our explicit-id runs never set.
        """
        import importlib.metadata

        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        import models

        name = name or artifact_name(self.name)
        model = model.eval()
        example = torch.rand(1, 3, *example_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            depth = model(example)[0]
        mlflow.set_tracking_uri(self.uri)  # Model.log resolves its store from the process-wide URI
        logged = self.client.create_logged_model(self.experiment_id, name=name, source_run_id=self.id)
        # MLflow then checks the example through its generic pyfunc wrapper, which takes single-tensor outputs
        # only: the network returns one depth map per scale, so that check can only warn. Its warning is muted.
        quiet = logging.getLogger("mlflow.models.model")
        level, quiet.level = quiet.level, logging.ERROR
        try:
            mlflow.pytorch.log_model(model, name=name, run_id=self.id, model_id=logged.model_id,
                                     serialization_format="pickle", code_paths=[str(Path(models.__file__).parent)],
                                     pip_requirements=[f"{p}=={importlib.metadata.version(p)}"
                                                       for p in ("torch", "timm")],
                                     signature=infer_signature(example.numpy(), depth.numpy()),
                                     input_example=example.numpy())
        finally:
            quiet.setLevel(level)
        if registered_name:
            mlflow.register_model(f"models:/{logged.model_id}", registered_name)
        return logged.model_id

    def end(self, status: str = "FINISHED") -> None:
        with _OPEN_LOCK:
            _OPEN.pop(self.id, None)
        self.flush()
        self.client.set_terminated(self.id, status=status)


def close_open_runs(status: str = "KILLED", tags: dict[str, str] | None = None) -> int:
    """End every run this process opened and has not ended (buffered metrics flushed); returns how many.

    For a process stopped by a signal (flows/orchestration.py stop_on_signals): the stage threads cannot end their
    own runs, and a run left RUNNING would stay so in the MLflow UI for good. Each run is closed on its own: one
    that fails to close does not keep the others open.
    """
    with _OPEN_LOCK:
        runs = list(_OPEN.values())
    closed = 0
    for run in runs:
        try:
            if tags:
                run.set_tags(tags)
            run.end(status)
            closed += 1
        except Exception as err:  # a store gone too: nothing more to do for this run
            print(f"warning: could not close MLflow run {run.id} ({type(err).__name__}: {str(err)[:200]})",
                  file=sys.stderr, flush=True)
    return closed


def log_evaluations(root: Path, parent_id: str | None, records: list[dict[str, Any]]) -> list[str]:
    """One nested MLflow run per metrics record (docs/contracts.md, schema 2), for comparing models across datasets
    and seeds in MLflow: tags and params `model`, `dataset`, `seed`, `start`; metrics `<protocol>.<metric>` (and
    `<protocol>.n_valid_pixels`); params `<protocol>.<setting>`. Returns the run ids.

    Cheap enough for every model x dataset x seed in one process: one client, three store calls per record.
    """
    from mlflow.entities import Metric, Param

    client = _client(root)
    experiment_id = _experiment_id(client, root)
    base = {**source_tags(root), "kind": "evaluation", "stage": "evaluate",
            **({"mlflow.parentRunId": parent_id} if parent_id else {})}
    now = int(time.time() * 1000)
    ids = []
    for record in records:
        who = identity({"MODEL": record["model"], "DATASET": record["dataset"], "SEED": record["seed"]})
        metrics, params = {}, {**who, "n_images": record.get("n_images"), "checkpoint_step": record.get(
            "checkpoint_step")}
        for protocol, result in record.get("protocols", {}).items():
            metrics.update({f"{protocol}.{k}": v for k, v in result.get("metrics", {}).items()})
            if "n_valid_pixels" in result:
                metrics[f"{protocol}.n_valid_pixels"] = result["n_valid_pixels"]
            params.update(flatten(result.get("protocol", {}), f"{protocol}."))
        name = f"evaluate {who['model']} {who['dataset']} seed{who['seed']}"
        run = client.create_run(experiment_id, run_name=name, tags={**base, **who})
        client.log_batch(run.info.run_id,
                         metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()
                                  if isinstance(v, int | float) and not isinstance(v, bool)],
                         params=[Param(k, str(v)[:6000]) for k, v in params.items() if v is not None])
        client.set_terminated(run.info.run_id)
        ids.append(run.info.run_id)
    return ids


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
        headline = json.loads(summary.read_text())  # claims, zero_shot, in_domain (docs/contracts.md)
        run.log_metrics({k: float(v) for k, v in flatten(headline).items() if isinstance(v, int | float)}, step=0)
