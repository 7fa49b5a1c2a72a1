"""The `metadepth` command line (typer): this file only assembles the app from the command groups beside it.

    pipeline.py  run, repro, stage, serve, profile     data.py     data formats | ingest | inspect
    predict.py   predict                               bench.py    bench
    compare.py   compare                               _common.py  one-line errors, project root, environment

Every user-facing failure ends as one line on stderr and a non-zero exit (flows/cli/_common.py). Heavy imports
(torch, Prefect, MLflow, DVC) happen inside the commands, after their arguments are checked.
"""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli import bench, compare, data, pipeline, predict
from flows.cli._common import OneLineErrors, show_version

app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Meta-initialized zero-shot cross-dataset indoor depth: pipeline, stages and tools.")


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                                   help="print the installed version and exit")] = False) -> None:
    pass


for group in (pipeline, predict, bench, compare):
    app.add_typer(group.app)
app.add_typer(data.app, name="data")


def main() -> None:
    app()
