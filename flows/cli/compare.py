"""`metadepth compare`: the latest pipeline runs side by side. Only the command-line wiring; the table is built by
flows/compare.py from MLflow, imported inside the command so `metadepth --help` does not pay for MLflow."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from flows.cli._common import configure_env, project_root, user_errors

app = typer.Typer()


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
                                                    "e.g. meta.settings.inner_steps=8")] = None,
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
