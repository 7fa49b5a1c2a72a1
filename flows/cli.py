"""The `metadepth` command line (typer).

Every user-facing failure ends as one line on stderr and a non-zero exit: `MetadepthError` carries messages that
name the thing and the fix. Heavy imports (torch, Prefect, MLflow, DVC) happen inside the commands so `--help`
and argument errors are instant.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

try:  # typer vendors its own copy of click (0.2x): its exceptions, not the `click` package's, are raised
    from typer._click import exceptions as cli_errors
except ImportError:  # an older typer on the installed click
    from click import exceptions as cli_errors

from flows.orchestration import DEFAULT_MAX_PARALLEL, TASK_RUNNERS
from tasks.io import MetadepthError


class OneLineErrors(TyperGroup):
    """Command-line usage errors (missing argument, unknown option, value out of range...) as ONE line on stderr.

    Click's own report is a usage block plus a boxed message over several lines; every other metadepth error is
    one line (`error: ...` naming the thing and the fix), so these are too: the message, then where the help is.
    """

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except cli_errors.NoArgsIsHelpError as err:  # bare `metadepth` / `metadepth data`: the help
            err.show()
            sys.exit(err.exit_code)
        except cli_errors.UsageError as err:
            where = err.ctx.command_path if err.ctx else "metadepth"
            message = " ".join(err.format_message().split())
            typer.secho(f"error: {message} (see `{where} --help`)", fg="red", err=True)
            sys.exit(err.exit_code)
        except cli_errors.ClickException as err:
            typer.secho(f"error: {' '.join(err.format_message().split())}", fg="red", err=True)
            sys.exit(err.exit_code)
        except typer.Abort:
            typer.secho("aborted", fg="yellow", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Meta-initialized zero-shot cross-dataset indoor depth: pipeline, stages and tools.")

QUIET_ENV = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_API_HOST": "127.0.0.1",
}


def configure_env(root: Path) -> None:
    """Offline, quiet, project-local defaults; anything the user already exported wins."""
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    state = root / ".metadepth"
    (state / "prefect").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(state / "prefect"))
    # The task cache lives with the project, whichever Prefect server records the runs.
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(state / "prefect-results"))
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(state / "prefect-results"))
    os.environ.setdefault("METADEPTH_HASH_CACHE", str(state / "hashes.json"))
    # Concurrency-slot leases on disk (PREFECT_HOME/concurrency_leases), not in the server's memory: a slot held by
    # a killed run is then freed when its lease expires, even after the server that granted it has stopped.
    os.environ.setdefault("PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE",
                          "prefect.server.concurrency.lease_storage.filesystem")


def project_root() -> Path:
    """The current directory, where DVC runs every stage command, else DVC_ROOT.

    Not DVC_ROOT first: for a queued experiment (`dvc exp run --queue`) DVC runs the stages in a temporary copy of
    the project but points DVC_ROOT at the parent project, so the stage would read the parent's params.yaml and
    write its outputs there.
    """
    for root in (Path.cwd(), Path(os.environ.get("DVC_ROOT", "."))):
        if (root / "params.yaml").is_file():
            return root.resolve()
    raise MetadepthError(f"{Path.cwd()}: no params.yaml here; run metadepth from the project root")


def fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg="red", err=True)
    raise typer.Exit(1)


@contextmanager
def user_errors():
    try:
        yield
    except MetadepthError as err:
        fail(err)
    except KeyboardInterrupt:
        typer.secho("interrupted; re-run the same command to resume", fg="yellow", err=True)
        raise typer.Exit(130) from None


@app.command()
def stage(
    args: Annotated[list[str], typer.Argument(help="stage kind and its arguments, e.g. `evaluate ft_meta loft`")],
) -> None:
    """Run one pipeline stage as a Prefect flow (the command each dvc.yaml stage runs)."""
    with user_errors():
        root = project_root()
        configure_env(root)
        from flows.pipeline import STAGE_FLOWS, check_stage_args

        check_stage_args(root, tuple(args))  # before the flow starts: a typo costs no Prefect server start-up
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
        from tasks.params import check_overrides

        check_overrides(root / "params.yaml", list(set_ or []))  # fail before a Prefect server starts
        configure_env(root)
        from flows.orchestration import check_task_runner
        from flows.remote import dvc_push, resolve_remote
        from tasks.tracking import settings

        check_task_runner(task_runner, max_parallel, dask_address)  # bad options fail before a server starts
        if push and not commit:
            raise MetadepthError("--push needs --commit: only outputs committed to DVC are in its cache to push")
        remote = resolve_remote(root, settings(root).dvc_remote) if push else None
        # A real server (not an ephemeral one) so the training concurrency limit is held (flows/orchestration.py).
        # Prefect is imported only once PREFECT_API_URL points at it: it reads its settings at import.
        with prefect_server(root):
            from flows.pipeline import run_pipeline

            out = run_pipeline(root, list(set_ or []), max_parallel, task_runner, dask_address, commit=commit)
        typer.echo(f"task runner: {task_runner}" + (f" at {dask_address}" if dask_address else ""))
        typer.echo(f"stages run: {len(out['ran'])}, cache hits: {len(out['cached'])}; MLflow run {out['mlflow_run']}")
        typer.echo(f"ran: {' '.join(out['ran']) or '-'}")
        if remote:
            typer.echo(f"dvc push -r {remote}: {dvc_push(root, remote)} files transferred")
        print_report(root)


def print_report(root: Path) -> None:
    summary = root / "reports" / "summary.md"
    if summary.is_file():
        table = [line for line in summary.read_text().splitlines() if line.startswith("|")]
        typer.echo(f"report: {summary.relative_to(root)}\n" + "\n".join(table))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def prefect_server(root: Path, timeout: float = 180.0):
    """Use the user's server if PREFECT_API_URL is set; otherwise one local server for all stages of a repro.

    Without it every `metadepth stage` process would start its own ephemeral server (10-25 s each here).
    """
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


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def repro(ctx: typer.Context) -> None:
    """`dvc repro` with one Prefect server and one MLflow parent run for all its stages; extra args go to dvc."""
    with user_errors():
        root = project_root()
        configure_env(root)
        (root / ".metadepth").mkdir(exist_ok=True)
        from tasks import tracking
        from tasks.params import load_params, params_hash, result_params

        params = result_params(load_params(root / "params.yaml"))
        from tasks.io import project_lock

        start = time.time()
        with project_lock(root, "metadepth repro"), prefect_server(root):
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
        configure_env(root)
        if not os.environ.get("PREFECT_API_URL"):
            raise MetadepthError("PREFECT_API_URL is not set: start `prefect server start` and export "
                                 "PREFECT_API_URL=http://127.0.0.1:4200/api (see README)")
        from flows.serve import serve as serve_flows

        serve_flows(root, max_parallel)


@app.command()
def profile(name: Annotated[str, typer.Argument(help="a file in profiles/, e.g. `paper`")]) -> None:
    """Write a profile's overrides (e.g. the paper's GPU setting) into params.yaml, validated."""
    with user_errors():
        root = project_root()
        from tasks.params import apply_overrides, profile_overrides

        overrides = profile_overrides(root / "profiles" / f"{name}.yaml")
        apply_overrides(root / "params.yaml", overrides)
        typer.echo(f"params.yaml: applied {len(overrides)} overrides from profiles/{name}.yaml")


class OutputFormat(StrEnum):
    markdown = "markdown"
    csv = "csv"


@app.command()
def compare(
    n: Annotated[int, typer.Option("-n", min=2, help="number of latest pipeline runs")] = 5,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default: tracking.experiment)")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="only runs with tag KEY=VALUE (repeatable), e.g. "
                                                  "runner=dvc or git_commit=SHA")] = None,
    param: Annotated[list[str] | None, typer.Option(help="only runs with logged param KEY=VALUE (repeatable), "
                                                    "e.g. meta.inner_steps=8")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="markdown: runs as columns; csv: one row per run")
                   ] = OutputFormat.markdown,
    out: Annotated[Path | None, typer.Option(help="write to this file (atomically) instead of stdout")] = None,
) -> None:
    """Print the latest pipeline runs side by side: parameters that differ and headline metrics."""
    with user_errors():
        root = project_root()
        configure_env(root)
        from flows.compare import compare_table
        from tasks.io import atomic_write

        text = compare_table(root, n, experiment=experiment, tags=tag, params=param, fmt=fmt.value)
        if text is None:
            typer.echo("no pipeline runs match; run `metadepth run` or `metadepth repro` first, or relax the filters",
                       err=True)
            return
        if out is None:
            typer.echo(text.rstrip("\n"))
            return
        with atomic_write(out) as tmp:
            tmp.write_text(text if text.endswith("\n") else text + "\n")
        typer.echo(f"wrote {out}")


from flows.bench_cli import register as register_bench  # noqa: E402
from flows.data_cli import data_app  # noqa: E402
from flows.predict_cli import register as register_predict  # noqa: E402

app.add_typer(data_app, name="data")
register_predict(app)
register_bench(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
