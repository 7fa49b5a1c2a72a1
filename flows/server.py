"""A local Prefect server for the duration of one command: `metadepth run`, `metadepth repro`, the test session.

Without it every `metadepth stage` process of a `dvc repro` would start its own ephemeral server (10-25 s each here),
and the training concurrency limit (flows/orchestration.py) would not be shared between them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.io import MetadepthError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def prefect_server(root: Path, timeout: float = 180.0) -> Iterator[str]:
    """Use the user's server if PREFECT_API_URL is set; otherwise start one on a free port, logging to
    .metadepth/prefect-server.log, and stop it on the way out. Yields the API URL."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = open(root / ".metadepth" / "prefect-server.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port), "--no-ui"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # Ctrl-C stops the run, which then records it here
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise MetadepthError(f"the Prefect server did not start; see {log.name}")
            time.sleep(0.5)
        os.environ["PREFECT_API_URL"] = url
        yield url
    finally:
        if "prefect.logging.handlers" in sys.modules:  # send this process's last run logs while the server is up
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5)
        os.environ.pop("PREFECT_API_URL", None)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
