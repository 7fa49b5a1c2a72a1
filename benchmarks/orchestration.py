"""What the orchestration costs when there is nothing to compute, and how much of a real run is not training.

Cached runs: a tiny copy of the project (tests/tiny_project.py) is run once with `metadepth run` to fill the DVC and
Prefect caches, then a fully cached `metadepth run` and a fully cached `dvc repro` are timed as a user would run
them (fresh processes; `metadepth run` starts its own ephemeral Prefect server, as it does without PREFECT_API_URL).
The user's PREFECT_API_URL / MLFLOW_TRACKING_URI are not passed on, so the bench never writes into their servers.

Share outside training: from the MLflow record (the only per-stage timing log the pipeline keeps), the latest
pipeline run in which training stages actually ran: 1 - (union of the meta_init and finetune stage intervals) /
(the pipeline run's wall time). Stage intervals include each stage's own start-up (imports, loading data), so this
is the share of the wall time outside the training *stages*.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import BenchConfig
from tasks.stages import STAGES

TRAINING = {kind for kind, stage in STAGES.items() if stage.trains}

# Set by flows.cli.configure_env or by the user: each would point the tiny project at someone else's state.
FOREIGN_ENV = ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_RESULTS_LOCAL_STORAGE_PATH", "PREFECT_LOCAL_STORAGE_PATH",
               "MLFLOW_TRACKING_URI", "METADEPTH_HASH_CACHE", "METADEPTH_PARENT_RUN_ID", "DVC_ROOT")


def _tool(name: str) -> str | None:
    """The command from this environment's bin folder first (the CLI of this checkout), else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.is_file() else shutil.which(name)


def _union_seconds(intervals: list[tuple[int, int]]) -> float:
    total, end = 0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total / 1000


def pipeline_time_share(tracking_uri: str) -> dict[str, Any] | None:
    """Wall time of the latest pipeline run that trained, split by stage kind; None if no such run is recorded."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        return None  # opening a missing SQLite store would create it
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    from tasks import tracking

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(os.environ.get("METADEPTH_EXPERIMENT", tracking.EXPERIMENT))
    if exp is None:
        return None
    parents = client.search_runs([exp.experiment_id], "tags.kind = 'pipeline' and attributes.status = 'FINISHED'",
                                 order_by=["attributes.start_time DESC"], max_results=20)
    for parent in parents:
        children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                      max_results=5000)
        ran = [c for c in children if c.data.tags.get("cache") == "miss" and c.info.end_time]
        training = [(c.info.start_time, c.info.end_time) for c in ran
                    if c.data.tags.get("stage", "").split("@")[0] in TRAINING]
        if not training:
            continue
        wall = (parent.info.end_time - parent.info.start_time) / 1000
        by_kind: dict[str, float] = {}
        for c in ran:
            kind = c.data.tags.get("stage", "?").split("@")[0]
            by_kind[kind] = round(by_kind.get(kind, 0.0) + (c.info.end_time - c.info.start_time) / 1000, 2)
        train = _union_seconds(training)
        return {"mlflow_run": parent.info.run_id, "runner": parent.data.tags.get("runner", "prefect"),
                "params_hash": parent.data.tags.get("params_hash"), "wall_s": round(wall, 2),
                "training_stages_s": round(train, 2), "share_outside_training": round(1 - train / wall, 4),
                "stage_seconds_by_kind": by_kind, "stages_run": len(ran)}
    return None


def _timed_run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
    return seconds, proc.stdout


def _ran(stdout: str) -> list[str]:
    """The stages `metadepth run` reports as run (not cached), from its `ran: ...` line."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith("ran: ")), "ran: ?")
    return [s for s in line[5:].split() if s != "-"]


def _default_run_share(cfg: BenchConfig) -> dict[str, Any]:
    from tasks import tracking
    from tasks.param_values import params_hash, result_params
    from tasks.params import load_params

    uri = tracking.tracking_uri(cfg.timing_root)
    try:
        share = pipeline_time_share(uri)
    except Exception as err:  # an unreachable tracking server must not fail the bench
        return {"measured": False, "note": f"not measured: could not read {uri} ({type(err).__name__}: {err})"}
    if share is None:
        return {"measured": False, "note": f"not measured: no finished pipeline run with training stages is recorded "
                                           f"in {uri} (run `metadepth run` or `metadepth repro` there first)"}
    current = params_hash(result_params(load_params(cfg.timing_root / "params.yaml")))
    return {"measured": True, "tracking_uri": uri, "params_match_params_yaml": share["params_hash"] == current,
            **share}


def bench(cfg: BenchConfig) -> dict[str, Any]:
    """Cached-run timings on a tiny project (skipped by --quick) and the time split of recorded pipeline runs."""
    default_run = _default_run_share(cfg)
    if cfg.quick:
        return {"skipped": "--quick: the cached-run timings need a full tiny pipeline run (minutes)",
                "default_pipeline_share": default_run}
    metadepth, dvc = _tool("metadepth"), _tool("dvc")
    tiny_module = cfg.root / "tests" / "tiny_project.py"
    if not (metadepth and dvc):
        return {"skipped": "the metadepth and dvc commands are not installed here", "default_pipeline_share":
                default_run}
    if not tiny_module.is_file():
        return {"skipped": f"{tiny_module} not found (the tiny project comes from the test suite)",
                "default_pipeline_share": default_run}

    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    env["PATH"] = f"{Path(dvc).parent}{os.pathsep}{env.get('PATH', '')}"  # make_tiny_project calls `dvc init`
    spec = importlib.util.spec_from_file_location("bench_tiny_project", tiny_module)
    tiny_project = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_project)
    project = cfg.workdir / "orchestration" / "project"
    saved_path = os.environ["PATH"]
    os.environ["PATH"] = env["PATH"]
    try:
        tiny_project.make_tiny_project(project)
    finally:
        os.environ["PATH"] = saved_path
    env["PYTHONPATH"] = str(project)  # the stage processes must run the copied code that DVC hashes

    first_s, _ = _timed_run([metadepth, "run"], project, env)
    # A second run should already be fully cached; whatever it re-runs is a cache-key problem worth reporting.
    second_s, out = _timed_run([metadepth, "run"], project, env)
    rerun = _ran(out)
    runs: dict[str, list[float]] = {"metadepth_run": [], "dvc_repro": []}
    for _ in range(2):
        seconds, out = _timed_run([metadepth, "run"], project, env)
        if _ran(out):
            raise RuntimeError(f"`metadepth run` is still not fully cached on its third run:\n{out[-1500:]}")
        runs["metadepth_run"].append(seconds)
        seconds, out = _timed_run([dvc, "repro"], project, env)
        if "up to date" not in out:
            raise RuntimeError(f"`dvc repro` after `metadepth run` was not up to date:\n{out[-1500:]}")
        runs["dvc_repro"].append(seconds)
    tiny_share = pipeline_time_share(f"sqlite:///{project / 'mlflow.db'}")
    return {
        "project": "tests/tiny_project.py (2 domains, 32x48, test_convnext, 2 meta + 3 finetune steps)",
        "first_metadepth_run_s": round(first_s, 2),
        "second_metadepth_run_s": round(second_s, 2),
        "stages_rerun_by_second_run": rerun,
        "cached_metadepth_run_s": round(statistics.median(runs["metadepth_run"]), 2),
        "cached_dvc_repro_s": round(statistics.median(runs["dvc_repro"]), 2),
        "cached_runs_s": {k: [round(x, 2) for x in v] for k, v in runs.items()},
        "tiny_pipeline_share": tiny_share,
        "default_pipeline_share": default_run,
    }
