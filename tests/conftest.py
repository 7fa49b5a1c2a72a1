"""Shared test setup: offline and quiet, one MLflow database, one Prefect server and one tiny project per session.

Creating a fresh MLflow SQLite store, starting a Prefect server or running the tiny DAG costs seconds each; tests
that need them share one per session instead of paying per test (`tiny_project` hands out copies).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from tiny_project import Templates, copy_project, make_tiny_project, one_thread, sh

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
    """One intra-op thread for the module, and the thread count restored after it (also when a stage set its own)."""
    with one_thread():
        yield


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory: pytest.TempPathFactory):
    """Factory: `tiny_project(upto="init", dest=None, **overrides) -> (root, params)`, a project on the tiny params
    plus `overrides` (params section -> values) with every stage up to `upto` run ("prepare" ... "report", None for
    none). Each stage runs once per session on the tiny params; its outputs are copied wherever the overrides leave
    them unchanged, and only the stages they change are run in the new project."""
    templates = Templates(tmp_path_factory.mktemp("template"))

    def make(upto: str | None = "init", dest: Path | None = None, **overrides: dict):
        root = dest or tmp_path_factory.mktemp(f"tiny-{upto}")
        return root, templates.project(root, upto, **overrides)

    return make


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory):
    """Factory: `tiny_repo(name) -> root`, a fresh copy of the tiny git + DVC project (make_tiny_project, built once
    per session), nothing run in it."""
    template = make_tiny_project(tmp_path_factory.mktemp("repo-template") / "project")
    return lambda name: copy_project(template, tmp_path_factory.mktemp(name) / "project")


@pytest.fixture(scope="session")
def reproduced(tiny_repo, prefect_api) -> tuple[Path, str]:
    """The tiny git + DVC project after one `metadepth repro` (the whole DAG through DVC), and what it printed.
    Modules that start from a reproduced project take a copy (copy_project) and leave this one as it is."""
    root = tiny_repo("reproduced")
    return root, sh(root, "metadepth", "repro").stdout
