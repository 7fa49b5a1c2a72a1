"""What happens when a run is stopped from outside: Ctrl-C, `kill`, or a dropped SSH session (SIGHUP).

Without this, the stage threads keep running after the signal, the process then dies without ending anything, and
the MLflow run and Prefect flow run stay RUNNING for good while the `metadepth-train` slot stays taken until its
lease expires (minutes; the re-run waits). So, on SIGTERM, SIGHUP or SIGINT, `stop_on_signals` closes the books
of this process and exits at once:
- every MLflow run it opened and has not ended -> KILLED (tag `stopped_by`);
- its Prefect flow run and unfinished task runs -> CANCELLED (Ctrl-C, or a cancel from the UI) or CRASHED;
- the training slots it holds -> released;
- its child processes (a Prefect server it started, torchrun, Dask workers) -> terminated;
- one line on stderr, exit status 128 + the signal number.
Exiting at once (os._exit) rather than unwinding is deliberate: the stage threads cannot be interrupted, and
Prefect's teardown would wait for them (hours of training). Nothing is lost that a re-run needs: every output is
written atomically, and a training stage resumes from its resume snapshot.

A process killed with SIGKILL (or by the OOM killer) can do none of this. Its slot is recorded on disk (which
process holds which lease), and the next run on this host that finds the holder gone takes the slot over at once
(`take_over_dead_holders`, called by flows/orchestration.py training_slot).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks import tracking

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
_HELD: dict[str, Path] = {}  # lease id -> its holder file, for the slots this process holds now


class Stopped(KeyboardInterrupt):
    """Raised in the main thread by `stop_on_signals`' handler: the process received `signum`."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --- who holds a slot ----------------------------------------------------------------------------------------------


def _holders_dir() -> Path:
    """One JSON file per slot lease held, beside Prefect's own state (PREFECT_HOME): the server knows a lease's
    expiry, not which process took it."""
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home) / "metadepth-slots"


def _alive(pid: int, started: float) -> bool:
    """Whether process `pid` of this host still runs and is the one that took the lease (not a reused pid)."""
    import psutil

    try:
        return abs(psutil.Process(pid).create_time() - started) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # exists, owned by someone else: not ours to judge
        return True


def _release_lease(lease_id: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.release_concurrency_slots_with_lease(lease_id)
        except ObjectNotFound:  # expired meanwhile, or released by its holder: nothing left to free
            pass


def remember_holder(name: str, lease_id: str) -> None:
    """Record that this process holds lease `lease_id` of the limit `name` (written atomically)."""
    import psutil

    path = _holders_dir() / f"{lease_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"lease_id": lease_id, "limit": name, "pid": os.getpid(), "host": socket.gethostname(),
              "started": psutil.Process().create_time()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)
    _HELD[lease_id] = path


def forget_holder(lease_id: str) -> None:
    """The lease is released: drop its record."""
    path = _HELD.pop(lease_id, None)
    if path is not None:
        path.unlink(missing_ok=True)


def take_over_dead_holders(name: str) -> int:
    """Free the slots of limit `name` held by processes of this host that no longer exist, at once instead of when
    their lease expires; one line for each. Returns how many were freed."""
    folder = _holders_dir()
    freed = 0
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):  # removed by its holder just now
            continue
        if holder.get("limit") != name or holder.get("host") != socket.gethostname():
            continue
        if _alive(holder["pid"], holder["started"]):
            continue
        _release_lease(holder["lease_id"])
        path.unlink(missing_ok=True)
        freed += 1
        print(f"took over the '{name}' slot held by process {holder['pid']}, which no longer exists on this host",
              flush=True)
    return freed


def release_held_slots() -> int:
    """Release the slots this process holds; returns how many. A failure is reported, not raised: the lease still
    expires on the server, and its record lets the next run take it over."""
    released = 0
    for lease_id in list(_HELD):
        try:
            _release_lease(lease_id)
        except Exception as err:
            _say(f"warning: could not release the slot lease {lease_id} ({type(err).__name__}: {str(err)[:200]})")
            continue
        forget_holder(lease_id)
        released += 1
    return released


# --- stopping on a signal ------------------------------------------------------------------------------------------


def _say(line: str) -> None:
    try:  # after SIGHUP the terminal may be gone
        sys.stdout.flush()
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def stop_prefect_run(flow_run_id: Any, signum: int) -> str | None:
    """Set the flow run and its unfinished task runs to CANCELLED (Ctrl-C, or the UI asked: the run is CANCELLING)
    or CRASHED (killed); returns the state name, None without a flow run or a server."""
    if flow_run_id is None:
        return None
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled, Crashed

    name = signal.Signals(signum).name
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run_id).state
        cancel = signum == signal.SIGINT or (current is not None and current.type == StateType.CANCELLING)
        make = Cancelled if cancel else Crashed
        message = f"stopped by {name}; re-run the same command to resume"
        client.set_flow_run_state(flow_run_id, make(message=message), force=True)
        unfinished = TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(
            any_=[StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED])))
        for task_run in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                              task_run_filter=unfinished):
            client.set_task_run_state(task_run.id, make(message=message), force=True)
    return "CANCELLED" if cancel else "CRASHED"


def _stop_children(timeout: float = 5.0) -> None:
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def close_the_books(signum: int, flow_run_id: Any = None) -> None:
    """End what this process has open (see the module docstring), say so in one line, and exit 128 + signum."""
    name = signal.Signals(signum).name
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "1"  # a tracking server gone too: fail fast, do not back off
    done = [f"{tracking.close_open_runs('KILLED', {'stopped_by': name})} MLflow run(s) KILLED"]
    try:
        state = stop_prefect_run(flow_run_id, signum)
    except Exception as err:
        state = None
        done.append(f"Prefect run not updated ({type(err).__name__})")
    if state:
        done.append(f"Prefect flow run {state}")
    slots = release_held_slots()
    if slots:
        done.append(f"{slots} training slot(s) released")
    _say(f"stopped by {name}: {', '.join(done)}; re-run the same command to resume")
    if "prefect.logging.handlers" in sys.modules:  # the run's last log lines, while the server is up
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=2)
    _stop_children()
    os._exit(128 + signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM, SIGHUP and SIGINT close the books of this process and exit (`close_the_books`).

    Enter it in the main thread inside the flow function (after Prefect installed its own SIGTERM handler, which
    would otherwise wait for the stage threads); elsewhere (a worker thread) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    flow_run_id = context.flow_run.id if context and context.flow_run else None

    def handler(signum: int, frame: Any) -> None:
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    except Stopped as stop:
        for s in STOP_SIGNALS:  # a second Ctrl-C must not interrupt the closing
            signal.signal(s, signal.SIG_IGN)
        close_the_books(stop.signum, flow_run_id)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
