"""`metadepth bench`: measure the pipeline's performance questions and write reports/bench.json.

Only the command-line wiring. The measurements (benchmarks/bench.py) sit above the flows they time, so this command
starts them as their own program, `python -m benchmarks.bench`, instead of importing them: `metadepth --help` does
not pay for torch, and the CLI does not depend on the layer above it.
"""

from __future__ import annotations

import subprocess
import sys
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
        argv = ["--root", str(root), "--threads", str(threads)] + (["--quick"] if quick else [])
        argv += ["--out", str(out.resolve())] if out else []
        argv += ["--only", only] if only is not None else []
        argv += ["--timing-from", str(timing_from.resolve())] if timing_from else []
        # stdout (progress, the table) goes straight through; stderr (the one-line errors) is passed on at the end
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench", *argv], cwd=root, stderr=subprocess.PIPE,
                              text=True)
        if proc.stderr.strip():
            typer.echo(proc.stderr.rstrip("\n"), err=True)
        raise typer.Exit(proc.returncode)
