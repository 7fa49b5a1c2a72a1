"""`metadepth predict`: images to depth maps and point clouds. Only the command-line wiring; the work is in
tasks/predict.py, which checks every argument and input before it imports torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli._common import user_errors

app = typer.Typer()


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="a metadepth checkpoint, e.g. data/checkpoints/seed0/ft_meta.pt")],
    inputs: Annotated[list[Path], typer.Argument(help="image files or folders (searched recursively for "
                                                      ".png .jpg .jpeg .bmp .tif)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (mirrors the input layout)")] = Path(
        "predictions"),
    ply: Annotated[bool, typer.Option("--ply", help="also write a coloured point cloud <name>.ply")] = False,
    ply_ascii: Annotated[bool, typer.Option("--ply-ascii", help="write the PLY as text instead of binary")] = False,
    fov: Annotated[float, typer.Option(help="horizontal field of view in degrees, for intrinsics not given")] = 60.0,
    fx: Annotated[float | None, typer.Option(help="focal length x in pixels at the input resolution")] = None,
    fy: Annotated[float | None, typer.Option(help="focal length y in pixels (default: fx)")] = None,
    cx: Annotated[float | None, typer.Option(help="principal point x in pixels (default: (W-1)/2)")] = None,
    cy: Annotated[float | None, typer.Option(help="principal point y in pixels (default: (H-1)/2)")] = None,
    max_side: Annotated[int | None, typer.Option(help="downscale larger images so the longer side is at most this "
                                                      "for the network; outputs stay at input resolution")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="images of equal working size run together")] = 4,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    strict: Annotated[bool, typer.Option("--strict", help="fail on the first unreadable input instead of "
                                                          "skipping it")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Predict metric depth (metres) for images: <name>.npy (float32), <name>.png preview, optionally <name>.ply."""
    with user_errors():
        from tasks.predict import Camera, predict_paths

        def warn(message: str) -> None:
            typer.secho(f"warning: {message}", fg="yellow", err=True)

        summary = predict_paths(checkpoint, inputs, out, batch_size=batch_size, max_side=max_side, device=device,
                                ply=ply or ply_ascii, ply_ascii=ply_ascii,
                                camera=Camera(fov_deg=fov, fx=fx, fy=fy, cx=cx, cy=cy), strict=strict,
                                show_progress=progress, on_warning=warn)
        skipped = summary["skipped"]
        typer.echo(f"predicted {summary['predicted']} image(s) on {summary['device']} -> {summary['out_dir']}"
                   + (f"; skipped {len(skipped)}: " + ", ".join(Path(s["path"]).name for s in skipped)
                      if skipped else ""))
