"""Inference on user images: a metric depth map (.npy), a colour-mapped preview (.png) and optionally a point cloud.

This is the part of the project a user touches after training, on images nobody prepared: any size, any folder
layout, some files broken. So: every readable image gives outputs at its own resolution, unreadable ones are
skipped by name (or stop the run with `strict`), and each output file is written atomically so an interrupted run
never leaves a half-written .npy that looks finished.

Images of the same working size are batched together; the network accepts any size, so nothing is padded or
cropped. Pending images are bounded (see `MAX_PENDING_BATCHES`), so memory does not grow with the number of inputs.

torch (and timm, through the model) is imported only once every argument and input has been checked: a wrong path
is reported in a fraction of a second, not after the seconds those imports take.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from tasks.io import MetadepthError, atomic_write

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_FOV_DEG = 60.0
# At most this many batches' worth of decoded images wait for a same-size partner before the fullest group runs.
MAX_PENDING_BATCHES = 4


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics for back-projection. Unset values come from the horizontal field of view and the centre.

    Pixel (u, v) is the integer column/row index, so the default principal point is ((W-1)/2, (H-1)/2).
    """

    fov_deg: float = DEFAULT_FOV_DEG
    fx: float | None = None
    fy: float | None = None
    cx: float | None = None
    cy: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.fov_deg < 180:
            raise MetadepthError(f"--fov {self.fov_deg}: the horizontal field of view must be in (0, 180) degrees")
        for name in ("fx", "fy"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise MetadepthError(f"--{name} {value}: focal lengths must be positive (pixels)")

    def matrix(self, height: int, width: int) -> tuple[float, float, float, float]:
        """fx, fy, cx, cy in pixels for an image of this size."""
        fx = self.fx if self.fx is not None else (width / 2) / math.tan(math.radians(self.fov_deg) / 2)
        fy = self.fy if self.fy is not None else fx  # square pixels unless told otherwise
        cx = self.cx if self.cx is not None else (width - 1) / 2
        cy = self.cy if self.cy is not None else (height - 1) / 2
        return fx, fy, cx, cy


@dataclass
class _Item:
    """One input image on its way through the model."""

    source: Path
    stem: Path  # output path without suffix, relative to the output folder
    rgb: np.ndarray  # (H, W, 3) uint8 at the original resolution
    work: np.ndarray  # (h, w, 3) float32 in [0, 1] at the working resolution


@dataclass
class FoundImages:
    """What `find_images` found: images with their output names, and the non-image files it passed over."""

    files: list[tuple[Path, Path]] = field(default_factory=list)  # (file, output stem relative to out_dir)
    ignored: list[Path] = field(default_factory=list)  # files in folders without an image suffix


def find_images(inputs: list[Path], out_dir: Path) -> FoundImages:
    """Expand folders recursively into image files; explicit files are kept whatever their suffix.

    Every input named on the command line must yield something: a file without an image suffix, or a folder
    without images, is an error naming it. Inside a folder only image suffixes are taken (a README or a depth .npy
    next to the images is not an error); hidden files and anything under the output folder (a re-run must not eat
    its own previews) are left out.
    """
    out_resolved = out_dir.resolve()
    found = FoundImages()
    used: set[str] = set()

    def add(path: Path, rel: Path) -> None:
        stem = rel.with_suffix("")
        key = stem.as_posix()
        if key in used:  # a.png + a.jpg, or two folders with the same file name
            key = f"{key}_{path.suffix.lstrip('.').lower()}"
            n = 2
            while key in used:
                key = f"{stem.as_posix()}_{n}"
                n += 1
        used.add(key)
        found.files.append((path, Path(key)))

    accepted = f"accepted: {' '.join(IMAGE_SUFFIXES)} files, or folders of them"
    for inp in inputs:
        before = len(found.files)
        if inp.is_dir():
            for path in sorted(inp.rglob("*")):
                rel = path.relative_to(inp)
                if not path.is_file() or any(part.startswith(".") for part in rel.parts):
                    continue
                if out_resolved in path.resolve().parents:
                    continue
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    add(path, rel)
                else:
                    found.ignored.append(path)
            if len(found.files) == before:
                raise MetadepthError(f"{inp}: no images found in this folder ({accepted})")
        elif inp.is_file():
            if inp.suffix.lower() not in IMAGE_SUFFIXES:
                raise MetadepthError(f"{inp}: not an image file (suffix {inp.suffix or 'none'!r}; {accepted})")
            add(inp, Path(inp.name))
        else:
            raise MetadepthError(f"{inp}: no such file or folder; check the path")
    explicit = {path.resolve() for path, _ in found.files}
    found.ignored = [p for p in found.ignored if p.resolve() not in explicit]
    return found


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB. Raises ValueError naming what is wrong; grey and 16-bit images are converted."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"not an image file (suffix {path.suffix or 'none'!r}; supported: {' '.join(IMAGE_SUFFIXES)})")
    data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode: works for non-ASCII paths too
    if data.size == 0:
        raise ValueError("empty file")
    level = cv2.utils.logging.getLogLevel()
    # Silent: OpenCV's own decoder messages would repeat the warning we print, less clearly.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if bgr is None or bgr.ndim != 3 or bgr.shape[0] == 0 or bgr.shape[1] == 0:
        raise ValueError("cannot be decoded as an image (corrupt or not an image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def working_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """The size the network sees: the input size, scaled down (aspect kept) so the longer side is <= max_side."""
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def colorize(depth: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB preview: near is bright, far is dark (magma, like the report's figures).

    The range defaults to the image's own 2nd-98th percentile so that a room 2-4 m deep still shows its structure.
    """
    finite = depth[np.isfinite(depth)]
    lo = vmin if vmin is not None else float(np.percentile(finite, 2)) if finite.size else 0.0
    hi = vmax if vmax is not None else float(np.percentile(finite, 98)) if finite.size else 1.0
    scaled = (np.nan_to_num(depth, nan=hi) - lo) / max(hi - lo, 1e-6)
    near_bright = (255 * (1 - np.clip(scaled, 0, 1))).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(near_bright, cv2.COLORMAP_MAGMA), cv2.COLOR_BGR2RGB)


def backproject(depth: np.ndarray, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """(H*W, 3) camera-frame points from planar depth: x right, y down, z forward (OpenCV convention), metres."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    z = depth.astype(np.float32)
    return np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=-1).reshape(-1, 3)


def write_ply(path: Path, points: np.ndarray, colors: np.ndarray, *, as_ascii: bool = False) -> None:
    """A coloured point cloud: float x, y, z and uchar red, green, blue per vertex (MeshLab, Open3D, CloudCompare)."""
    n = len(points)
    fmt = "ascii" if as_ascii else "binary_little_endian"
    header = (f"ply\nformat {fmt} 1.0\ncomment metadepth prediction, camera frame x right y down z forward, metres\n"
              f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    vertex = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    vertex["x"], vertex["y"], vertex["z"] = points[:, 0], points[:, 1], points[:, 2]
    vertex["r"], vertex["g"], vertex["b"] = colors[:, 0], colors[:, 1], colors[:, 2]
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(header.encode("ascii"))
        if as_ascii:
            np.savetxt(f, vertex, fmt="%.6g %.6g %.6g %d %d %d")
        else:
            f.write(vertex.tobytes())


def resolve_device(device: str) -> torch.device:
    """The torch device for `--device` (checked by predict_paths before anything is imported)."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise MetadepthError("--device cuda: no GPU is visible; use --device auto or cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def _batches(found: FoundImages, batch_size: int, max_side: int | None,
             on_skip: Callable[[Path, str], None]) -> Iterator[list[_Item]]:
    """Decoded images grouped by working size, at most `batch_size` per group, in bounded memory."""
    pending: dict[tuple[int, int], list[_Item]] = {}
    for path, stem in found.files:
        try:
            rgb = read_image(path)
        except (ValueError, OSError, cv2.error) as err:
            on_skip(path, str(err))
            continue
        size = working_size(rgb.shape[0], rgb.shape[1], max_side)
        work = rgb.astype(np.float32) / 255.0  # resized in float: no rounding back to 8 bits
        if size != rgb.shape[:2]:
            work = cv2.resize(work, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        group = pending.setdefault(size, [])
        group.append(_Item(path, stem, rgb, work))
        if len(group) == batch_size:
            yield pending.pop(size)
        elif sum(map(len, pending.values())) >= MAX_PENDING_BATCHES * batch_size:
            yield pending.pop(max(pending, key=lambda k: len(pending[k])))
    yield from pending.values()


def predict_batch(model: torch.nn.Module, images: list[np.ndarray], device: torch.device) -> np.ndarray:
    """(B, h, w) float32 metres for same-size (h, w, 3) float images in [0, 1]: the network's scale-0 output, which
    is at input resolution."""
    import torch

    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous().to(device)
    with torch.inference_mode():
        return model(x)[0][:, 0].float().cpu().numpy()


def _write_outputs(item: _Item, depth: np.ndarray, out_dir: Path, *, ply: bool, ply_ascii: bool,
                   camera: Camera) -> list[Path]:
    h, w = item.rgb.shape[:2]
    if depth.shape != (h, w):  # back to the input resolution; depth is metric, so values are interpolated as is
        depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_LINEAR)
    depth = depth.astype(np.float32)
    base = out_dir / item.stem
    written = [base.with_name(base.name + ".npy"), base.with_name(base.name + ".png")]
    with atomic_write(written[0]) as tmp, open(tmp, "wb") as f:
        np.save(f, depth)  # a file object: np.save(path) would append ".npy" to the temporary name
    ok, png = cv2.imencode(".png", cv2.cvtColor(colorize(depth), cv2.COLOR_RGB2BGR))
    if not ok:
        raise MetadepthError(f"{item.source}: could not encode the preview PNG")
    with atomic_write(written[1]) as tmp:
        tmp.write_bytes(png.tobytes())
    if ply:
        written.append(base.with_name(base.name + ".ply"))
        write_ply(written[2], backproject(depth, *camera.matrix(h, w)), item.rgb.reshape(-1, 3), as_ascii=ply_ascii)
    return written


def predict_paths(
    checkpoint: Path,
    inputs: list[Path],
    out_dir: Path,
    *,
    batch_size: int = 4,
    max_side: int | None = None,
    device: str = "auto",
    ply: bool = False,
    ply_ascii: bool = False,
    camera: Camera | None = None,
    strict: bool = False,
    show_progress: bool = False,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Depth for every image under `inputs`; returns a summary (counts, skipped files with reasons, outputs).

    Outputs mirror the input layout under `out_dir`: `<name>.npy` (float32 metres, input resolution),
    `<name>.png` (preview) and with `ply` `<name>.ply`. Unreadable files are skipped and reported through
    `on_warning`; with `strict` the first one raises MetadepthError instead, and so does a run that predicts nothing.
    """
    if not Path(checkpoint).is_file():
        raise MetadepthError(f"{checkpoint}: checkpoint not found; pass a file the pipeline wrote, e.g. "
                             "data/checkpoints/seed0/ft_meta.pt")
    if out_dir.exists() and not out_dir.is_dir():
        raise MetadepthError(f"--out {out_dir}: is a file; pass a folder (created if missing)")
    if batch_size < 1:
        raise MetadepthError(f"--batch-size {batch_size}: must be at least 1")
    if max_side is not None and max_side < 8:
        raise MetadepthError(f"--max-side {max_side}: must be at least 8 pixels")
    if device not in ("auto", "cpu", "cuda"):
        raise MetadepthError(f"--device {device!r}: choose auto, cpu or cuda")
    if not inputs:
        raise MetadepthError("no inputs given; pass image files or folders")
    camera = camera or Camera()
    found = find_images(list(inputs), out_dir)  # every argument is checked by here; now the heavy imports
    torch_device = resolve_device(device)
    from tasks.checkpoints import model_from_checkpoint

    model, payload = model_from_checkpoint(Path(checkpoint))
    model.to(torch_device).eval()

    skipped: list[dict[str, str]] = []
    outputs: list[str] = []
    warn = on_warning or (lambda _msg: None)

    def on_skip(path: Path, reason: str) -> None:
        if strict:
            raise MetadepthError(f"{path}: {reason}; remove it or run without --strict to skip it")
        skipped.append({"path": str(path), "reason": reason})
        warn(f"skipped {path}: {reason}")

    predicted = 0
    with _progress(show_progress) as bar:
        task = bar.add_task("predicting", total=len(found.files)) if bar else None
        for group in _batches(found, batch_size, max_side, on_skip):
            depths = predict_batch(model, [item.work for item in group], torch_device)
            for item, depth in zip(group, depths, strict=True):
                outputs.extend(str(p) for p in _write_outputs(item, depth, out_dir, ply=ply, ply_ascii=ply_ascii,
                                                              camera=camera))
                predicted += 1
            if bar:
                bar.update(task, completed=predicted + len(skipped))
        if bar:
            bar.update(task, completed=len(found.files))
    if not predicted:
        raise MetadepthError(f"no image could be read from {', '.join(str(p) for p in inputs)} "
                             f"({len(skipped)} skipped, see the warnings above); nothing was written")
    if found.ignored:
        warn(f"ignored {len(found.ignored)} file(s) without an image suffix in the input folders "
             f"(e.g. {found.ignored[0]})")
    return {
        "checkpoint": str(checkpoint),
        "checkpoint_step": payload.get("step"),
        "device": str(torch_device),
        "out_dir": str(out_dir),
        "predicted": predicted,
        "skipped": skipped,
        "ignored": [str(p) for p in found.ignored],
        "outputs": outputs,
    }


class _NoProgress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(show: bool) -> Any:
    """A rich progress bar on stderr (stdout stays clean for scripts), or nothing."""
    if not show:
        return _NoProgress()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=False)
