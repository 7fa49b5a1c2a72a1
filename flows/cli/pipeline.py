"""`metadepth run | repro | stage | serve | profile`: the pipeline, whole or one stage at a time.

Each command checks its arguments and params.yaml first, then imports Prefect, MLflow or DVC: a typo never waits
for a server to start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from flows.cli._common import configure_env, project_root, user_errors
from flows.orchestration import DEFAULT_MAX_PARALLEL, TASK_RUNNERS
from tasks.io import MetadepthError
from tasks.stages import arg_table

app = typer.Typer()


def _stage_help() -> str:
    lines = [" ".join([kind, *(f"{name} ({key})" for name, key in args)]) for kind, args in arg_table().items()]
    return ("Run one pipeline stage as a Prefect flow (the command each dvc.yaml stage runs).\n\n"
            "Stages and their arguments, each a value of the params.yaml list in brackets:\n\n"
            "\b\n" + "\n".join(f"  {line}" for line in lines))


@app.command(help=_stage_help())
def stage(
    args: Annotated[list[str], typer.Argument(help="stage kind and its arguments, e.g. `finetune meta 0`")],
) -> None:
    with user_errors():
        root = project_root()
        from flows.stage_args import check_stage_args

        check_stage_args(root, tuple(args))  # before Prefect is imported: a typo costs no Prefect start-up
        configure_env(root)
        from flows.server import shared_server

        with shared_server(root):  # the project's server, started by the first stage: no ephemeral one per stage
            from flows.pipeline import STAGE_FLOWS

            out = STAGE_FLOWS[args[0]](list(args), str(root))
        typer.echo(f"{out['stage']}: done")


@app.command()
def run(
    set_: Annotated[list[str] | None, typer.Option("--set-param", "-S", help="override KEY=VALUE (written to "
                                                   "params.yaml, like `dvc exp run -S`)")] = None,
    commit: Annotated[bool, typer.Option(help="commit outputs to DVC afterwards so `dvc status` is clean")] = True,
    max_parallel: Annotated[int, typer.Option(min=1, help="stage tasks run at once (the evaluation fan-out); "
                                              "with --task-runner dask, the local cluster's threads")]
    = DEFAULT_MAX_PARALLEL,
    task_runner: Annotated[str, typer.Option(help=f"{' or '.join(TASK_RUNNERS)}: a thread pool in this process, or "
                                             "a local Dask cluster (or the one at --dask-address)")] = "thread",
    dask_address: Annotated[str | None, typer.Option(help="scheduler of an existing Dask cluster, e.g. "
                                                     "tcp://10.0.0.5:8786 (needs --task-runner dask)")] = None,
    push: Annotated[bool, typer.Option(help="after success, `dvc push` the outputs to tracking.dvc_remote "
                                       "(null: DVC's default remote)")] = False,
) -> None:
    """Run the whole DAG of dvc.yaml as one Prefect flow run (cached per stage)."""
    with user_errors():
        root = project_root()
        from flows.orchestration import check_task_runner
        from tasks.param_values import check_overrides

        check_overrides(root / "params.yaml", list(set_ or []))  # fail before a Prefect server starts
        check_task_runner(task_runner, max_parallel, dask_address)
        if push and not commit:
            raise MetadepthError("--push needs --commit: only outputs committed to DVC are in its cache to push")
        configure_env(root)
        stages = None if set_ or push else up_to_date(root)
        if stages is not None:  # the cached run: DVC alone answers it in seconds, no Prefect server, no MLflow run
            summary = root / "reports" / "summary.md"
            typer.echo(f"up to date: dvc status finds all {stages} stages unchanged, nothing run; outputs in data/ "
                       f"and reports/" + (f" ({summary.relative_to(root)})" if summary.is_file() else ""))
            return
        from flows.remote import dvc_push, resolve_remote
        from flows.server import shared_server
        from tasks.tracking import settings

        remote = resolve_remote(root, settings(root).dvc_remote) if push else None
        # A real server (not an ephemeral one) so the training concurrency limit is held (flows/orchestration.py).
        # Prefect is imported only once PREFECT_API_URL points at it: it reads its settings at import.
        with shared_server(root):
            from flows.pipeline import run_pipeline

            out = run_pipeline(root, list(set_ or []), max_parallel, task_runner, dask_address, commit=commit)
        typer.echo(f"task runner: {task_runner}" + (f" at {dask_address}" if dask_address else ""))
        typer.echo(f"stages run: {len(out['ran'])}, cache hits: {len(out['cached'])}; MLflow run {out['mlflow_run']}")
        typer.echo(f"ran: {' '.join(out['ran']) or '-'}")
        if remote:
            typer.echo(f"dvc push -r {remote}: {dvc_push(root, remote)} files transferred")
        print_report(root)


def up_to_date(root: Path) -> int | None:
    """The number of stages when `dvc status` finds none out of date (outputs present and committed), else None."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            return None if repo.status() else len(repo.index.stages)
    except DvcException:  # whatever DVC cannot answer, the full run reports properly
        return None


def print_report(root: Path) -> None:
    summary = root / "reports" / "summary.md"
    if summary.is_file():
        table = [line for line in summary.read_text().splitlines() if line.startswith("|")]
        typer.echo(f"report: {summary.relative_to(root)}\n" + "\n".join(table))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def repro(ctx: typer.Context) -> None:
    """`dvc repro` with one Prefect server and one MLflow parent run for all its stages; extra args go to dvc."""
    with user_errors():
        root = project_root()
        from tasks.param_values import params_hash, result_params
        from tasks.params import load_params

        params = result_params(load_params(root / "params.yaml"))
        configure_env(root)
        from flows.server import shared_server
        from tasks import tracking
        from tasks.io import project_lock

        start = time.time()
        with project_lock(root, "metadepth repro"), shared_server(root):
            parent = tracking.Run(root, "pipeline (dvc repro)", params=params,
                                  tags={"kind": "pipeline", "runner": "dvc", "params_hash": params_hash(params)})
            env = {**os.environ, tracking.PARENT_ENV: parent.id}
            proc = subprocess.run([sys.executable, "-m", "dvc", "repro", *ctx.args], cwd=root, env=env)
            tracking.log_report(parent, root)
            parent.end("FINISHED" if proc.returncode == 0 else "FAILED")
        if proc.returncode != 0:
            raise MetadepthError(f"dvc repro failed (exit {proc.returncode}); see the stage error above")
        typer.echo(f"pipeline finished in {time.time() - start:.0f} s; MLflow run {parent.id}")
        print_report(root)


@app.command()
def serve(
    max_parallel: Annotated[int, typer.Option(min=1, help="stages run at once within one pipeline run")]
    = DEFAULT_MAX_PARALLEL,
) -> None:
    """Serve the pipeline and stage flows: start runs, with parameters, from the Prefect UI (Ctrl-C stops)."""
    with user_errors():
        root = project_root()
        if not os.environ.get("PREFECT_API_URL"):
            raise MetadepthError("PREFECT_API_URL is not set: start `prefect server start` and export "
                                 "PREFECT_API_URL=http://127.0.0.1:4200/api (see docs/orchestration.md)")
        configure_env(root)
        from flows.serve import serve as serve_flows

        serve_flows(root, max_parallel)


@app.command()
def profile(name: Annotated[str, typer.Argument(help="a file in profiles/, e.g. `paper`")]) -> None:
    """Write a profile's overrides (e.g. the paper's GPU setting) into params.yaml, validated."""
    with user_errors():
        root = project_root()
        from tasks.param_values import apply_overrides
        from tasks.params_file import profile_overrides

        overrides = profile_overrides(root / "profiles" / f"{name}.yaml")
        apply_overrides(root / "params.yaml", overrides)
        typer.echo(f"params.yaml: applied {len(overrides)} overrides from profiles/{name}.yaml")
