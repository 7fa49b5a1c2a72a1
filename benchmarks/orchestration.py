"""What the orchestration costs beside the training: per stage process, and when there is nothing to compute.

Stage costs: a tiny copy of the project (tests/tiny_project.py) has every stage run as its own `metadepth stage`
process in `dvc repro`'s order, as plain `dvc repro` runs them (then `dvc commit`). Per stage kind: the process's
wall time, its MLflow stage run (the body: the stage's imports, work and logging) and the difference, the fixed cost
of a stage process (interpreter start, CLI and Prefect imports, Prefect server start or connection, flow and task
runs, the cache key, MLflow set-up). The training share is the training stages' runs over the sum of wall times.

Cached runs: then a fully cached `metadepth run`, `dvc repro` and `dvc status`, in fresh processes as a user runs
them. The user's PREFECT_API_URL / MLFLOW_TRACKING_URI are not passed on, so the bench never writes into their
servers; the project's shared Prefect server is stopped at the end.

Share outside training: from the MLflow record (the only per-stage timing log the pipeline keeps), the latest
pipeline run in which training stages actually ran: 1 - (union of the meta_init and finetune stage intervals) /
(the pipeline run's wall time). Stage intervals include each stage's own start-up (imports, loading data), so this
is the share of the wall time outside the training *stages*.

`python -m benchmarks.orchestration CHECKOUT` prints the stage costs and cached runs of another checkout's code
(e.g. the main branch, for a before/after table).
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

# Set by the CLI (configure_env) or by the user: each would point the tiny project at someone else's state.
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
    return seconds, proc.stdout + proc.stderr


def dag_commands(project: Path) -> list[tuple[str, str]]:
    """(stage name, command) of every stage of dvc.yaml, in the order `dvc repro` runs them."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        order = list(reversed(list(nx.topological_sort(repo.index.graph))))
        return [(s.name, s.cmd if isinstance(s.cmd, str) else " && ".join(s.cmd)) for s in order]


def stage_run_seconds(tracking_uri: str) -> dict[str, float]:
    """Stage name -> seconds of its latest MLflow stage run (the stage's body: its imports, work and logging)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    from tasks import tracking

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(os.environ.get("METADEPTH_EXPERIMENT", tracking.EXPERIMENT))
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'stage' and tags.cache = 'miss'",
                              order_by=["attributes.start_time ASC"], max_results=5000) if exp else []
    return {r.data.tags["stage"]: (r.info.end_time - r.info.start_time) / 1000 for r in runs if r.info.end_time}


def stage_costs(project: Path, env: dict[str, str]) -> dict[str, Any]:
    """Every stage of `project` run as its own process in `dvc repro`'s order (what plain `dvc repro` does), then
    `dvc commit`: per stage kind the process wall time, its MLflow run (the body) and the difference, the fixed
    cost of a stage process (start, imports, Prefect, flow and task runs, cache key, MLflow set-up)."""
    walls: dict[str, float] = {}
    for name, cmd in dag_commands(project):
        walls[name] = _timed_run(["bash", "-c", cmd], project, env)[0]
    _timed_run([_tool("dvc") or "dvc", "commit", "-f", "-q"], project, env)
    return summarize(walls, stage_run_seconds(f"sqlite:///{project / 'mlflow.db'}"))


def summarize(walls: dict[str, float], bodies: dict[str, float]) -> dict[str, Any]:
    """Per stage kind the mean process wall time, MLflow run and fixed cost (their difference), from stage name ->
    seconds; the training share is the training stages' runs over the sum of the walls (the stages run one by one)."""
    missing = sorted(set(walls) - set(bodies))
    if missing:
        raise RuntimeError(f"no MLflow stage run recorded for {missing}")
    kinds: dict[str, dict[str, float]] = {}
    for name, wall in walls.items():
        row = kinds.setdefault(name.split("@")[0], {"n": 0, "wall_s": 0.0, "run_s": 0.0})
        row["n"] += 1
        row["wall_s"] += wall
        row["run_s"] += bodies[name]
    for row in kinds.values():
        row["wall_s"], row["run_s"] = round(row["wall_s"] / row["n"], 2), round(row["run_s"] / row["n"], 2)
        row["fixed_s"] = round(row["wall_s"] - row["run_s"], 2)
    wall = sum(walls.values())
    training = sum(bodies[name] for name in walls if name.split("@")[0] in TRAINING)
    return {"stages": len(walls), "wall_s": round(wall, 2), "training_runs_s": round(training, 2),
            "training_share": round(training / wall, 4),
            "fixed_s_per_stage": round((wall - sum(bodies[n] for n in walls)) / len(walls), 2),
            "per_kind_mean": kinds}


def tiny_project_env(root: Path, project: Path) -> dict[str, str]:
    """Build the tiny project (tests/tiny_project.py of `root`'s checkout) at `project`; the environment to run its
    commands in: this environment's tools first, none of the user's servers, the copied code on PYTHONPATH."""
    dvc = _tool("dvc")
    tiny_module = root / "tests" / "tiny_project.py"
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    env["PATH"] = f"{Path(dvc).parent}{os.pathsep}{env.get('PATH', '')}"  # make_tiny_project calls `dvc init`
    spec = importlib.util.spec_from_file_location("bench_tiny_project", tiny_module)
    tiny_project = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_project)
    saved_path = os.environ["PATH"]
    os.environ["PATH"] = env["PATH"]
    try:
        tiny_project.make_tiny_project(project)
    finally:
        os.environ["PATH"] = saved_path
    env["PYTHONPATH"] = str(project)  # the stage processes must run the copied code that DVC hashes
    return env


def cached_runs(project: Path, env: dict[str, str], repeats: int = 2) -> dict[str, list[float]]:
    """Fully cached `metadepth run`, `dvc repro` and `dvc status`, each checked to have run nothing."""
    metadepth, dvc = _tool("metadepth"), _tool("dvc")
    # "stages run: 0": a checkout from before the up-to-date check, which runs the cached flow (for before/after)
    checks = {"metadepth_run": ([metadepth, "run"], ("up to date", "stages run: 0")),
              "dvc_repro": ([dvc, "repro"], ("up to date",)), "dvc_status": ([dvc, "status"], ("up to date",))}
    runs: dict[str, list[float]] = {k: [] for k in checks}
    for _ in range(repeats):
        for key, (cmd, expect) in checks.items():
            seconds, out = _timed_run(cmd, project, env)
            if not any(e in out for e in expect):
                raise RuntimeError(f"`{' '.join(cmd[-2:])}` on the unchanged tiny project was not up to date:\n"
                                   f"{out[-1500:]}")
            runs[key].append(round(seconds, 2))
    return runs


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
    """On a tiny project (skipped by --quick): the fixed cost per stage process and the training share of a plain
    `dvc repro`-like run, then the fully cached commands; and the time split of the recorded default pipeline."""
    default_run = _default_run_share(cfg)
    if cfg.quick:
        return {"skipped": "--quick: the stage costs and cached runs need a full tiny pipeline run (minutes)",
                "default_pipeline_share": default_run}
    if not (_tool("metadepth") and _tool("dvc")):
        return {"skipped": "the metadepth and dvc commands are not installed here", "default_pipeline_share":
                default_run}
    if not (cfg.root / "tests" / "tiny_project.py").is_file():
        return {"skipped": "tests/tiny_project.py not found (the tiny project comes from the test suite)",
                "default_pipeline_share": default_run}
    from flows.server import stop_shared

    project = cfg.workdir / "orchestration" / "project"
    env = tiny_project_env(cfg.root, project)
    try:
        costs = stage_costs(project, env)
        runs = cached_runs(project, env)
    finally:
        stop_shared(project)  # the stages' shared Prefect server: nothing left running after the bench
    return {
        "project": "tests/tiny_project.py (2 domains, 32x48, test_convnext, 2 meta + 3 finetune steps)",
        "stage_costs": costs,
        **{f"cached_{k}_s": statistics.median(v) for k, v in runs.items()},
        "cached_runs_s": runs,
        "default_pipeline_share": default_run,
    }


def stage_phases(root: Path, args: tuple[str, ...]) -> list[tuple[str, float]]:
    """Run one stage in this process the way `metadepth stage` does, timing each phase of its fixed cost in order.

    Run from a fresh process in the project (PYTHONPATH at its code): every import is then paid here, as a stage
    process pays it. A checkout without the shared server (before this round) starts an ephemeral one in the flow.
    """
    marks = [("start", time.perf_counter())]

    def mark(what: str) -> None:
        marks.append((what, time.perf_counter()))

    import flows.cli  # the CLI app, as `metadepth` imports it: timed here

    mark("import the CLI (typer, params schema)")
    configure_env = flows.cli._common.configure_env
    from flows.stage_args import check_stage_args

    check_stage_args(root, args)
    mark("check_stage_args (params.yaml, DVC index)")
    configure_env(root)
    try:
        from flows.server import shared_server

        server = shared_server(root)
    except ImportError:  # before this round: no shared server
        from contextlib import nullcontext

        server = nullcontext()
    with server:
        mark("Prefect server: find or start")
        from flows.pipeline import STAGE_FLOWS

        mark("import flows.pipeline (Prefect)")
        import tasks.dispatch  # noqa: F401

        mark("import the stage code (torch)")
        import timm  # noqa: F401

        mark("import timm (torchvision, torch._dynamo)")
        from tasks import tracking

        tracking._client(root).search_experiments()
        mark("import MLflow + SQLite store set-up")
        STAGE_FLOWS[args[0]](list(args), str(root))
        mark("the stage flow: flow and task runs, cache key, MLflow run, the work")
    return [(what, round(t - prev, 2)) for (_, prev), (what, t) in zip(marks, marks[1:], strict=False)]


if __name__ == "__main__":
    # python -m benchmarks.orchestration CHECKOUT: the stage costs and cached runs of another checkout's code
    # python -m benchmarks.orchestration phases KIND ARGS...: one stage's fixed cost by phase (run in a project)
    import json
    import tempfile

    if sys.argv[1:2] == ["phases"]:
        for what, seconds in stage_phases(Path.cwd(), tuple(sys.argv[2:])):
            print(f"| {what} | {seconds:.2f} |")
        sys.exit(0)
    code = Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    with tempfile.TemporaryDirectory(prefix="metadepth-orch-") as tmp:
        tiny = Path(tmp) / "project"
        tiny_env = tiny_project_env(code, tiny)
        try:
            result = {"code": str(code), "stage_costs": stage_costs(tiny, tiny_env),
                      "cached_runs_s": cached_runs(tiny, tiny_env, repeats=1)}
        finally:
            from flows.server import stop_shared

            stop_shared(tiny)
        print(json.dumps(result, indent=2))
