"""`metadepth bench`: measure the pipeline's performance questions and write reports/bench.json.

Only the command-line wiring; the measurements are in benchmarks/ (see benchmarks/bench.py), imported inside the
command so `metadepth --help` does not pay for torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli._common import project_root, user_errors

app = typer.Typer()


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="tiny sizes through the same code (tests, CI): about a "
                                                        "minute on a small shared CPU, a third of it importing torch "
                                                        "and timm; skips the orchestration, threads and "
                                                        "torch.compile timings")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="where to write the JSON report "
                                                           "(default: reports/bench.json)")] = None,
    threads: Annotated[int, typer.Option(min=0, help="torch intra-op threads for every section; 1 keeps timings "
                                                     "stable on a small shared CPU; 0: runtime.host.num_threads of "
                                                     "params.yaml (torch's default if that is 0)")] = 1,
    only: Annotated[str | None, typer.Option(help="comma-separated sections: reptile, loader, shard_format, "
                                                  "generation, inference, orchestration, threads, compile")] = None,
    timing_from: Annotated[Path | None, typer.Option(help="project whose MLflow record gives the default pipeline's "
                                                          "time split (default: this project)")] = None,
) -> None:
    """Benchmark Reptile overhead, data loading, shard layouts, data preparation, inference, orchestration and the CPU
    step (threads, torch.compile); writes reports/bench.json and prints a summary table."""
    with user_errors():
        root = project_root()
        from benchmarks.bench import parse_only, print_table, run_bench

        parse_only(only)  # fail on a typo before minutes of measuring
        from rich.console import Console

        console = Console()

        def progress(name: str, result: dict) -> None:
            status = "error" if "error" in result else "skipped" if result.get("skipped") else "done"
            console.print(f"[dim]bench: {name} {status} in {result['seconds']} s[/dim]")

        report = run_bench(root, quick=quick, threads=threads, only=only, out=out,
                           timing_root=timing_from.resolve() if timing_from else None, on_section=progress)
        print_table(report, console)
        failed = [name for name, r in report["sections"].items() if "error" in r]
        if failed:  # the report is written anyway; the exit code says it is incomplete
            typer.secho(f"error: section(s) {', '.join(failed)} failed; details in {report['path']}", fg="red",
                        err=True)
            raise typer.Exit(1)
