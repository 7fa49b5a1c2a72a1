"""The local Prefect server the pipeline's commands share, so no stage process starts an ephemeral one of its own.

Without it every `metadepth stage` process of a plain `dvc repro` would start (and stop) its own ephemeral server,
26 s each on the loaded 2-core machine, and the training concurrency limit (flows/orchestration.py) would not be
shared between them. `shared_server` starts one project-local server in the background the first time, records its
URL and keeper pid in .metadepth/prefect-server.json, and every later command finds it there. The keeper process
(`python -m flows.server`) stops the server once no command has used it for METADEPTH_SERVER_IDLE_S seconds (default
IDLE_S), or as soon as that file is removed, so nothing is left running for ever. A PREFECT_API_URL already set (the
user's own server, the test session's) always wins.

`prefect_server` is the owned variant: a server for the duration of one block (the test session).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.io import MetadepthError

IDLE_S = 300.0  # long enough to bridge the gaps between the stages of a `dvc repro` and a user's next command
POLL_S = 2.0
START_S = 600.0  # a keeper whose starter never recorded it (it timed out waiting) stops after this
STATE = "prefect-server.json"  # under .metadepth/: {"url": ..., "pid": keeper pid, "server_pid": ...}
USERS = "prefect-server.users"  # under .metadepth/: one empty file per process using the server, named by its pid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc here: kill(0) has answered
        return True


def _server_command(port: int) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while not healthy(url):
        if proc.poll() is not None or time.time() > deadline:
            raise MetadepthError(f"the Prefect server did not start; see {log}")
        time.sleep(0.3)


@contextmanager
def prefect_server(root: Path, timeout: float = 180.0) -> Iterator[str]:
    """Use the user's server if PREFECT_API_URL is set; otherwise start one on a free port, logging to
    .metadepth/prefect-server.log, and stop it on the way out. Yields the API URL."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = root / ".metadepth" / "prefect-server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(_server_command(port), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # Ctrl-C stops the run, which then records it here
    try:
        _wait_healthy(url, proc, log, timeout)
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        _drain_logs()
        os.environ.pop("PREFECT_API_URL", None)
        _stop(proc)


def _drain_logs() -> None:
    if "prefect.logging.handlers" in sys.modules:  # send this process's last run logs while the server is up
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


# --- the shared server -------------------------------------------------------------------------------------------


def read_state(root: Path) -> dict | None:
    """The shared server recorded for this project, if its keeper still runs and it answers; else None."""
    try:
        state = json.loads((root / ".metadepth" / STATE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not process_alive(int(state.get("pid", 0))):
        return None
    if not healthy(str(state.get("url"))):
        return None
    return state


def _start_shared(root: Path, timeout: float) -> dict:
    state_dir = root / ".metadepth"
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = state_dir / "prefect-server.log"
    idle = os.environ.get("METADEPTH_SERVER_IDLE_S", str(IDLE_S))
    with open(log, "w") as out:  # the keeper outlives this process: its own session, no terminal
        keeper = subprocess.Popen([sys.executable, "-m", "flows.server", str(root), str(port), idle], stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                  cwd=root, env={**os.environ, "PYTHONPATH": _pythonpath()})
    _wait_healthy(url, keeper, log, timeout)
    state = {"url": url, "pid": keeper.pid}
    tmp = state_dir / f"{STATE}.tmp"
    tmp.write_text(json.dumps(state))
    tmp.replace(state_dir / STATE)
    return state


def _pythonpath() -> str:
    """The keeper must import this checkout's flows.server, wherever the command was started from."""
    here = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])


@contextmanager
def shared_server(root: Path, timeout: float = 180.0) -> Iterator[str]:
    """PREFECT_API_URL for the block: the user's if set, else the project's shared server, started if none runs.

    While the block runs this process is a registered user of the server (the keeper never stops a server in use);
    the server stays up afterwards for the next command. Yields the API URL.
    """
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    state_dir = root / ".metadepth"
    users = state_dir / USERS
    users.mkdir(parents=True, exist_ok=True)
    me = users / str(os.getpid())
    with open(state_dir / "prefect-server.lock", "w") as lock:  # one process starts it; the others then find it
        fcntl.flock(lock, fcntl.LOCK_EX)
        me.touch()  # registered before the server is looked up or started: the keeper never stops it under us
        state = read_state(root) or _start_shared(root, timeout)
    os.environ["PREFECT_API_URL"] = state["url"]
    try:
        yield state["url"]
    finally:
        _drain_logs()
        os.environ.pop("PREFECT_API_URL", None)
        me.unlink(missing_ok=True)
        users.touch()  # the keeper's idle clock starts now, even if it never saw this process's file


def stop_shared(root: Path) -> bool:
    """Stop the project's shared server now (its keeper sees its state file gone); whether one was running."""
    state = read_state(root)
    (root / ".metadepth" / STATE).unlink(missing_ok=True)
    if state:
        try:
            os.kill(int(state["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
    return state is not None


def _in_use(users: Path) -> bool:
    live = False
    for f in users.glob("*") if users.is_dir() else []:
        if f.name.isdigit() and process_alive(int(f.name)):
            live = True
        else:
            f.unlink(missing_ok=True)  # a user killed before it could unregister
    return live


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(0)  # runs keep's `finally`: the server stops with its keeper


def keep(root: Path, port: int, idle_s: float) -> None:
    """The keeper (`python -m flows.server ROOT PORT IDLE_S`): run the server until it has been idle for `idle_s`
    seconds, its state file no longer names this process, or SIGTERM; then stop it and remove the state file."""
    state_file, users = root / ".metadepth" / STATE, root / ".metadepth" / USERS
    proc = subprocess.Popen(_server_command(port), stdin=subprocess.DEVNULL)
    signal.signal(signal.SIGTERM, _exit)
    seen_state, started = False, time.time()
    last_used = started
    try:
        while proc.poll() is None:
            time.sleep(POLL_S)
            try:
                named = json.loads(state_file.read_text()).get("pid") == os.getpid()
            except (OSError, ValueError):
                named = False
            if seen_state and not named:  # stopped (stop_shared) or replaced, or the project is gone
                break
            seen_state = seen_state or named
            if not seen_state and time.time() - started > START_S:  # the process that started it gave up
                break
            if _in_use(users):
                last_used = time.time()
            elif users.is_dir():
                last_used = max(last_used, users.stat().st_mtime)
            if time.time() - last_used > idle_s:
                print(f"idle for {idle_s:.0f} s: stopping the shared Prefect server", flush=True)
                break
    finally:
        _stop(proc)
        try:
            if json.loads(state_file.read_text()).get("pid") == os.getpid():
                state_file.unlink()
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    keep(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
