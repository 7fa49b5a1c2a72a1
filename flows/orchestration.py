"""What Prefect adds around the stages: run names, artifacts, the training concurrency limit, retries, task runners.

Kept apart from flows/pipeline.py (which maps dvc.yaml onto Prefect tasks) so each policy can be read, and tested, on
its own, and so the stage code in tasks/ and models/ never needs Prefect: training loops only call the tracker's
optional `progress(done, total)` hook (tasks/telemetry.py), and the wrapper here turns that into a Prefect artifact.

Everything here degrades to a no-op outside a Prefect flow or task run (plain library use, a unit test), and a failing
artifact call is logged, never raised: the UI view of a run must not be able to stop the run.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tasks.io import MetadepthError
from tasks.stages import arg_table

TRAIN_LIMIT = "metadepth-train"  # Prefect global concurrency limit held while a training stage runs
TABLE_KEY = "metadepth-cross-dataset"  # table artifact: the report's tables as numbers
REPORT_KEY = "metadepth-report"  # markdown artifact: reports/summary.md without its figures
PROGRESS_PREFIX = "metadepth-progress"  # progress artifacts: metadepth-progress-<stage name>
DEFAULT_MAX_PARALLEL = 2  # stage tasks running at once (the evaluation fan-out) unless --max-parallel says otherwise
TASK_RUNNERS = ("thread", "dask")
STAGE_RETRIES = 2  # attempts after the first, for transient failures only (see is_transient)
RETRY_DELAYS = [5, 30]  # seconds before each retry: a server that is starting, a SQLite writer that is finishing
TRANSIENT_MESSAGES = (
    "database is locked",  # SQLite (MLflow's store, Prefect's database) while another writer holds it
    "database is busy",
    "database table is locked",
    "connection refused",  # a server not (yet) listening, as wrapped by requests/urllib3/MLflow
    "max retries exceeded",
    "server disconnected",
    "temporarily unavailable",
)
TRANSIENT_HTTP_STATUS = {429, 502, 503, 504}


def in_run_context() -> bool:
    """True inside a Prefect flow or task run: artifacts belong to a run, so outside one there is nothing to do."""
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes only) from free text such as a stage name."""
    return "-".join(p for p in (re.sub(r"[^a-z0-9]+", "-", part.lower()).strip("-") for part in parts) if p)


def _warn(what: str, err: Exception) -> None:
    print(f"warning: {what} failed ({type(err).__name__}: {str(err)[:200]}); the run goes on", flush=True)


# --- run names ---------------------------------------------------------------------------------------------------


def stage_arguments(args: Sequence[str]) -> dict[str, str]:
    """`metadepth stage` arguments by name: ("finetune", "meta", "0") -> {"START": "meta", "SEED": "0"}."""
    names = [name for name, _ in arg_table().get(args[0], [])]
    return dict(zip(names, args[1:], strict=False))


def stage_run_name(args: Sequence[str]) -> str:
    """A readable Prefect flow run name from a stage's arguments: ("finetune", "meta", "0") -> finetune-meta-seed0,
    ("evaluate",) -> evaluate; instead of Prefect's random ones (`objective-hippo`)."""
    values = [f"seed{v}" if name == "SEED" else str(v) for name, v in stage_arguments(args).items()]
    return "-".join([args[0], *values])


def pipeline_run_name(overrides: Sequence[str] | None) -> str:
    """The pipeline's flow run name: `pipeline`, followed by the overrides it runs with."""
    return " ".join(["pipeline", *(overrides or [])])[:120]


def stage_flow_run_name() -> str:
    """`flow_run_name` of the stage flows (parameter `args`): evaluated by Prefect when the run starts."""
    from prefect.runtime import flow_run

    return stage_run_name(flow_run.parameters["args"])


def pipeline_flow_run_name() -> str:
    """`flow_run_name` of the pipeline flow (parameter `overrides`)."""
    from prefect.runtime import flow_run

    return pipeline_run_name(flow_run.parameters.get("overrides"))


# --- artifacts ---------------------------------------------------------------------------------------------------


def publish_report(root: Path, result: dict[str, Any]) -> None:
    """The report stage's table and summary as Prefect artifacts of the current run (stable keys: the UI's
    Artifacts page then shows their history across runs). `result` is what tasks.report.run_report returned: numeric
    `table_rows` and `markdown`, summary.md without relative image paths (which would break in the UI)."""
    if not in_run_context():
        return
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    try:
        if result.get("table_rows"):
            create_table_artifact(result["table_rows"], key=TABLE_KEY, description="The report's tables as numbers: "
                                  "one row per protocol x model x column (RMSE with its 95% interval, AbsRel, delta1, "
                                  "relative RMSE change vs. the baseline)")
        if result.get("markdown"):
            create_markdown_artifact(result["markdown"], key=REPORT_KEY, description="reports/summary.md; the "
                                     "figures are embedded in reports/index.html")
    except Exception as err:  # a view of the run; the outputs are on disk and in MLflow either way
        _warn("publishing the report artifacts", err)


class StageProgress:
    """A stage's tracker plus a Prefect progress artifact that follows its training steps.

    Forwards `log_metrics` unchanged and implements the optional `progress(done, total)` hook the training loops
    call every step; updates are throttled to one API call per `min_interval` seconds (and the last step).
    """

    min_interval = 2.0

    def __init__(self, tracker: Any, stage: str):
        self.tracker, self.stage = tracker, stage
        self.key = artifact_key(PROGRESS_PREFIX, stage)
        self._id: Any = None
        self._last = 0.0
        self._warned = False
        if in_run_context():
            from prefect.artifacts import create_progress_artifact

            self._id = self._call(create_progress_artifact, progress=0.0, key=self.key,
                                  description=f"{stage}: not started")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.tracker.log_metrics(metrics, step)

    def progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self._id is None or (done < total and now - self._last < self.min_interval):
            return
        self._last = now
        self._update(100.0 * done / max(total, 1), f"{self.stage}: step {done}/{total}")

    def finish(self) -> None:
        """100% once the stage succeeded (under torchrun the steps run in child processes and are not seen)."""
        if self._id is not None:
            self._update(100.0, f"{self.stage}: done")

    def _update(self, percent: float, description: str) -> None:
        from prefect.artifacts import update_progress_artifact

        self._call(update_progress_artifact, artifact_id=self._id, progress=percent, description=description)

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as err:  # the progress view must never stop a training run
            if not self._warned:
                _warn(f"the progress artifact {self.key}", err)
                self._warned = True
            return None


# --- the training concurrency limit ------------------------------------------------------------------------------


def _api_server() -> bool:
    """Whether runs go to a Prefect server (PREFECT_API_URL) rather than a per-process ephemeral one.

    Only a server runs the lease repossessor that frees the slot of a killed stage; with an ephemeral server (plain
    `dvc repro`, stages one after another in separate processes) a killed stage would hold the slot for ever.
    """
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


_ENSURE_LOCK = threading.Lock()  # stages of one run start together: one creates the limit, the others then find it


def ensure_limit(name: str = TRAIN_LIMIT, limit: int = 1) -> None:
    """Create the global concurrency limit with `limit` slots if it does not exist.

    An existing limit is left as it is: raise it (`prefect gcl update metadepth-train --limit 2`) on a machine where
    two trainings may share the accelerators.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with _ENSURE_LOCK, get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
            except ObjectAlreadyExists:  # another run created it in between
                pass


@contextmanager
def training_slot(name: str = TRAIN_LIMIT, notice_every: float = 60.0, poll: float = 5.0) -> Iterator[None]:
    """Hold one slot of the global limit `name` (created with 1 slot if missing) for the duration of the block.

    So two pipeline runs, or two variants of one run, never train on one GPU at once. While waiting, a line every
    `notice_every` seconds says why; every `poll` seconds, a slot whose holder process no longer exists on this host
    is taken over (`take_over_dead_holders`). The lease id and this process are recorded on disk for that.
    """
    if not _api_server():
        yield
        return
    from prefect.concurrency.context import ConcurrencyContext
    from prefect.concurrency.sync import concurrency

    from flows.stopping import forget_holder, remember_holder, take_over_dead_holders

    ensure_limit(name)
    held: list[str] = []
    with ExitStack() as stack:
        # Prefect records each lease it grants on the innermost ConcurrencyContext: ours, so we learn its id.
        leases = stack.enter_context(ConcurrencyContext()).cleanup_lease_ids
        stack.callback(lambda: [forget_holder(lease) for lease in held])  # after the release: never neither
        last_notice = None
        while True:
            take_over_dead_holders(name)
            try:
                # A failed lease renewal (a server hiccup) must not kill hours of training: it only logs.
                stack.enter_context(concurrency(name, occupy=1, timeout_seconds=min(poll, notice_every),
                                                strict=True, raise_on_lease_renewal_failure=False))
                break
            except TimeoutError:
                if last_notice is None or time.monotonic() - last_notice >= notice_every:
                    last_notice = time.monotonic()
                    print(f"waiting for a free '{name}' slot: another training stage holds it (`prefect gcl "
                          f"inspect {name}`; if none runs, free it with `prefect gcl update {name} --active-slots "
                          "0`)", flush=True)
        if leases:
            held.append(str(leases[-1]))
            remember_holder(name, held[0])
        yield


# --- retries -----------------------------------------------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes/contexts (MLflow and Prefect wrap the low-level error)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _transient_one(exc: BaseException) -> bool:
    import httpx

    if isinstance(exc, ConnectionError | TimeoutError | httpx.TransportError):
        return True
    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in TRANSIENT_HTTP_STATUS:
        return True
    try:
        from requests.exceptions import ConnectionError as RequestsConnectionError
        from requests.exceptions import Timeout as RequestsTimeout
    except ImportError:  # pragma: no cover - requests comes with MLflow
        pass
    else:
        if isinstance(exc, RequestsConnectionError | RequestsTimeout):
            return True
    message = str(exc).lower()
    return any(m in message for m in TRANSIENT_MESSAGES)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: a locked SQLite database or a server that is not ready (connection errors, timeouts, 5xx).

    Never our own `MetadepthError` (a user error: retrying repeats it) nor anything else (a bug: retrying hides it).
    """
    chain = _chain(exc)
    if any(isinstance(e, MetadepthError) for e in chain):
        return False
    return any(_transient_one(e) for e in chain)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry a failed stage task only when its exception `is_transient`.

    A retried training stage resumes from its `<name>.resume.pt` snapshot, so a retry costs little.
    """
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - the failed state's own exception, classified below
        return is_transient(exc)
    return False


# --- task runners ------------------------------------------------------------------------------------------------


def check_task_runner(kind: str, max_parallel: int, dask_address: str | None = None) -> None:
    """Validate the task runner options without importing Prefect (the CLI checks them before a server starts)."""
    if kind not in TASK_RUNNERS:
        raise MetadepthError(f"task runner {kind!r}: use one of {', '.join(TASK_RUNNERS)}")
    if max_parallel < 1:
        raise MetadepthError(f"max_parallel {max_parallel}: must be at least 1")
    if dask_address and kind != "dask":
        raise MetadepthError("--dask-address needs --task-runner dask")


def make_task_runner(kind: str = "thread", max_parallel: int = DEFAULT_MAX_PARALLEL,
                     dask_address: str | None = None) -> Any:
    """The task runner of the pipeline flow: `thread` (the default) or `dask`.

    `max_parallel` bounds the stage tasks running at once (the evaluation fan-out): the thread pool's size, or the
    threads of the local Dask cluster started for the run. With `dask_address` the tasks go to an existing Dask
    scheduler, and its workers' threads are the bound; the workers must see the project at the same path.
    """
    check_task_runner(kind, max_parallel, dask_address)
    if kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=max_parallel)
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    # One worker process (isolated from the flow's process) with max_parallel threads; loopback only, no dashboard.
    return DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": max_parallel, "processes": True,
                                          "host": "127.0.0.1", "dashboard_address": None})
