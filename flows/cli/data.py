"""`metadepth data ...`: ingest real datasets in their official formats into prepared shards, and inspect them.

    metadepth data formats                                      # the readers and their default options
    metadepth data ingest data/raw/nyuv2 --format nyuv2 --name nyuv2 --workers 4
    metadepth data ingest ~/dl/replica --format replica --name replica -o depth_scale=6553.5 --skip-bad
    metadepth data inspect nyuv2                                 # counts, resolution, depth stats, sample grid PNG

Shards go to data/prepared/<NAME>/ exactly as the pipeline's prepare stage writes them (same code), at the training
resolution of params.yaml unless --height/--width say otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from flows.cli._common import project_root, user_errors

app = typer.Typer(no_args_is_help=True, help="Ingest real datasets into prepared shards and inspect them.")


def _options(pairs: list[str]) -> dict:
    """`-o KEY=VALUE` reader options (YAML values); a malformed one is named as the option it is."""
    from tasks.io import MetadepthError
    from tasks.params_file import parse_override

    out = {}
    for text in pairs:
        if "=" not in text or not text.split("=", 1)[0].strip():
            raise MetadepthError(f"--option {text!r}: expected KEY=VALUE, e.g. -o depth_scale=1000 (options per "
                                 "format: `metadepth data formats`)")
        keys, value = parse_override(text)
        out[".".join(keys)] = value
    return out


@app.command()
def formats() -> None:
    """List the registered dataset formats and their default options."""
    from tasks.readers import READERS

    for name, cls in READERS.items():
        defaults = cls.parse_options({}).model_dump(mode="json")
        typer.echo(f"{name}: " + ", ".join(f"{k}={v}" for k, v in defaults.items()))


@app.command()
def ingest(
    source: Annotated[Path, typer.Argument(help="the dataset as downloaded: a folder, or NYU's .mat file")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="reader: see `metadepth data formats`")],
    name: Annotated[str, typer.Option("--name", "-n", help="output folder data/prepared/NAME")],
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="reader option KEY=VALUE (YAML value), "
                                                     "repeatable")] = None,
    workers: Annotated[int | None, typer.Option(min=0, help="reader processes (0 = in this process); default: "
                                                "min(4, cores - 1)")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="quarantine bad frames (listed in quarantine.csv) "
                                           "instead of failing")] = False,
    height: Annotated[int | None, typer.Option(min=16, help="default: data.height of params.yaml")] = None,
    width: Annotated[int | None, typer.Option(min=16, help="default: data.width of params.yaml")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing data/prepared/NAME")] = False,
) -> None:
    """Read a dataset in its official format and write prepared shards + manifest under data/prepared/NAME."""
    with user_errors():
        from tasks.io import MetadepthError
        from tasks.params import DOMAIN_NAME, load_params

        root = project_root()
        if not re.match(DOMAIN_NAME, name):
            raise MetadepthError(f"--name {name!r} must match {DOMAIN_NAME} (it becomes a folder under data/)")
        out = root / "data" / "prepared" / name
        if out.exists() and not overwrite:
            raise MetadepthError(f"{out}: already exists; pass --overwrite to replace it")
        options = _options(option or [])
        d = load_params(root / "params.yaml").data
        from tasks.preprocess.ingest import default_workers
        from tasks.preprocess.ingest import ingest as run_ingest
        from tasks.readers import make_reader

        reader = make_reader(fmt, source, options)
        summary = run_ingest(reader, out, dataset=name, source_label=str(source), height=height or d.height,
                             width=width or d.width, min_depth=d.min_depth, max_depth=d.max_depth,
                             chunk_frames=d.chunk_frames, compression=d.compression,
                             workers=default_workers() if workers is None else workers, skip_bad=skip_bad,
                             progress=True)
        counts = ", ".join(f"{k} {v}" for k, v in summary["frames"].items())
        typer.echo(f"{name}: {counts} frames -> {out.relative_to(root)}")
        if summary["quarantined"]:
            typer.secho(f"{summary['quarantined']} bad frames quarantined: see {out.relative_to(root)}/quarantine.csv",
                        fg="yellow")


@app.command()
def inspect(
    name: Annotated[str, typer.Argument(help="a dataset under data/prepared/")],
    samples: Annotated[int, typer.Option(min=1, max=64, help="test frames in the grid")] = 8,
    out: Annotated[Path | None, typer.Option(help="grid PNG; default reports/inspect/NAME.png")] = None,
) -> None:
    """Print counts, resolution and depth statistics of a prepared dataset, and write a sample grid PNG."""
    with user_errors():
        from tasks.preprocess.inspection import sample_grid, summarize

        root = project_root()
        prepared = root / "data" / "prepared" / name
        info = summarize(prepared)
        h, w = info["resolution"]
        dep = info["depth"]
        counts = ", ".join(f"{k} {v}" for k, v in info["splits"].items())
        intrinsics = "yes" if info["has_intrinsics"] else "no"
        typer.echo(f"{name} ({info['source_format'] or 'unknown format'}): {counts} frames, {w}x{h}, "
                   f"{info['scenes']} scenes, intrinsics: {intrinsics}")
        typer.echo(f"depth (m): min {dep['min']:.3f}, median of frame medians {dep['median_of_medians']:.3f}, "
                   f"max {dep['max']:.3f}; valid pixels {100 * dep['valid_fraction_mean']:.1f}% on average, "
                   f"{dep['frames_without_valid_depth']} frames without valid depth")
        if info["quarantined"]:
            typer.echo(f"quarantined: {info['quarantined']} frames (quarantine.csv)")
        png = sample_grid(prepared, out or root / "reports" / "inspect" / f"{name}.png", samples)
        typer.echo(f"sample grid: {png}")
