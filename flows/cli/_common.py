"""What every `metadepth` command shares: one-line errors, the project root, the quiet project-local environment.

Nothing heavy is imported here (no torch, Prefect, MLflow or DVC): every command checks its arguments first and
imports what it needs afterwards, so a mistake costs a fraction of a second, not a torch import.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

try:  # typer vendors its own copy of click (0.2x): its exceptions, not the `click` package's, are raised
    from typer._click import exceptions as cli_errors
except ImportError:  # an older typer on the installed click
    from click import exceptions as cli_errors

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


def show_version(value: bool) -> None:
    """`metadepth --version`: the installed package's version (pyproject.toml), then exit."""
    if value:
        try:
            typer.echo(f"metadepth {version('metadepth')}")
        except PackageNotFoundError:  # a bare checkout on sys.path, never installed
            typer.echo("metadepth (not installed: run `uv sync`)")
        raise typer.Exit()


QUIET_ENV = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_API_HOST": "127.0.0.1",
    "MPLBACKEND": "Agg",  # figures are only ever written to files: no display needed, none looked for
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
    """The one way a command reports a failure the user can fix: `error: ...` on stderr, exit 1."""
    typer.secho(f"error: {err}", fg="red", err=True)
    raise typer.Exit(1)


@contextmanager
def user_errors() -> Iterator[None]:
    """Run a command's body: MetadepthError becomes one line and exit 1, Ctrl-C a hint to resume and exit 130."""
    try:
        yield
    except MetadepthError as err:
        fail(err)
    except KeyboardInterrupt:
        typer.secho("interrupted; re-run the same command to resume", fg="yellow", err=True)
        raise typer.Exit(130) from None
