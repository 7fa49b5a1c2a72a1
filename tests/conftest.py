"""Shared test setup: offline and quiet, one MLflow database and one Prefect server per session.

Creating a fresh MLflow SQLite store or starting a Prefect server costs seconds each; tests that need them share
one per session instead of paying per test.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from flows.cli._common import QUIET_ENV  # noqa: E402

for key, value in QUIET_ENV.items():
    os.environ.setdefault(key, value)
# The CLI of this checkout must be the one the end-to-end tests call.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def mlflow_uri(session_dir: Path) -> str:
    uri = f"sqlite:///{session_dir / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


@pytest.fixture(scope="session")
def prefect_api(session_dir: Path, mlflow_uri: str):
    """One Prefect server for every end-to-end test (subprocesses inherit PREFECT_API_URL)."""
    from flows.server import prefect_server

    os.environ["PREFECT_HOME"] = str(session_dir / "prefect")
    (session_dir / "prefect").mkdir(exist_ok=True)
    (session_dir / ".metadepth").mkdir(exist_ok=True)
    with prefect_server(session_dir) as url:
        yield url


@pytest.fixture(scope="module")
def single_thread():
    """Tiny nets on a small shared CPU: intra-op threads mostly add contention (erratic 10x slowdowns)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
