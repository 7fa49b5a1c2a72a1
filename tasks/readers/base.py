"""What every real-dataset reader shares: the frame it yields, the sample it lists, its options, and the checks.

A reader works in two steps so ingestion can stream and run in parallel: `samples()` lists tiny, picklable
descriptors of every frame (cheap, in the parent process), and `load(sample)` reads one frame at its native
resolution (in a worker process). Frames are checked here, once, with one rule for every format, so a bad file
gives the same one-line error whichever reader found it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tasks.io import MetadepthError

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True, slots=True)
class Sample:
    """One frame to read: ids for the manifest, the file to blame in errors, and what `load` needs."""

    source_id: str
    scene: str
    split: str
    file: str
    ref: Any = None


@dataclass
class Frame:
    """One frame at native resolution: RGB uint8 (H,W,3) in RGB order, planar depth in metres (0 = invalid)."""

    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: np.ndarray | None = None  # fx, fy, cx, cy in pixels, pixel centres at integer coordinates


class ReaderOptions(BaseModel):
    """Reader-specific settings (`data.sources.<name>.options` or `metadepth data ingest -o KEY=VALUE`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitOptions(ReaderOptions):
    """Seeded random split, used where a dataset has no official split file."""

    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _fractions(self) -> SplitOptions:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be below 1 (something must be left to train on)")
        return self


class Reader:
    """Base class of a registered reader; subclasses set `format`, `Options`, and optional preset `defaults`."""

    format: ClassVar[str] = ""
    Options: ClassVar[type[ReaderOptions]] = ReaderOptions
    defaults: ClassVar[dict[str, Any]] = {}  # a preset's values; anything the user gives wins

    def __init__(self, path: Path | str, options: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.options = self.parse_options(options)
        if not self.path.exists():
            raise MetadepthError(f"{self.path}: not found; put the downloaded {self.format} data there "
                                 "(see docs/datasets.md)")

    @classmethod
    def parse_options(cls, options: Mapping[str, Any] | None) -> Any:
        """The preset's defaults overridden by the user's options, validated (errors name the option)."""
        return validate_options(cls.format, cls.Options, {**cls.defaults, **(options or {})})

    def samples(self) -> list[Sample]:
        """Every frame of the dataset with its split; raises if there is none."""
        raise NotImplementedError

    def load(self, sample: Sample) -> Frame:
        """One frame at native resolution; raises MetadepthError naming the file if it cannot be read."""
        raise NotImplementedError

    def attrs(self, height: int, width: int) -> dict[str, Any]:
        """Extra shard attributes (e.g. NYU's evaluation crop at the stored resolution)."""
        return {}

    def close(self) -> None:
        """Drop open file handles (before worker processes start, and at the end)."""

    def __getstate__(self) -> dict[str, Any]:
        # A reader is sent to worker processes; open handles must not travel with it.
        self.close()
        return self.__dict__.copy()


def validate_options(fmt: str, model: type[ReaderOptions], values: Mapping[str, Any]) -> ReaderOptions:
    try:
        return model.model_validate(dict(values))
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<options>"
        msg = "unknown option" if first["type"] == "extra_forbidden" else first["msg"]
        known = ", ".join(model.model_fields)
        raise MetadepthError(f"{fmt} options: {key}: {msg} (options are: {known})") from None


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


@contextmanager
def reading(path: Path | str, what: str = "file") -> Iterator[None]:
    """Turn the many ways a library fails on a damaged file into one line that names the file and the fix."""
    try:
        yield
    except MetadepthError:
        raise
    except (OSError, KeyError, ValueError, TypeError, EOFError) as err:
        raise MetadepthError(f"{path}: cannot read {what} ({one_line(err)}); the file may be truncated or "
                             "corrupt: re-download it, or pass --skip-bad to quarantine it") from None


def check_frame(frame: Frame, file: str) -> Frame:
    """The one validity rule for every reader: shapes, dtypes, and depth that is finite and non-negative."""
    rgb, depth = frame.rgb, frame.depth
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise MetadepthError(f"{file}: RGB has shape {getattr(rgb, 'shape', None)}; expected (H, W, 3)")
    if rgb.dtype != np.uint8:
        raise MetadepthError(f"{file}: RGB has dtype {rgb.dtype}; expected uint8")
    if not isinstance(depth, np.ndarray) or depth.ndim != 2:
        raise MetadepthError(f"{file}: depth has shape {getattr(depth, 'shape', None)}; expected (H, W)")
    if not np.issubdtype(depth.dtype, np.floating):
        raise MetadepthError(f"{file}: depth has dtype {depth.dtype}; expected floating-point metres")
    if depth.shape != rgb.shape[:2]:
        raise MetadepthError(f"{file}: RGB is {rgb.shape[0]}x{rgb.shape[1]} but depth is "
                             f"{depth.shape[0]}x{depth.shape[1]}; they must be the same size")
    bad = ~np.isfinite(depth)
    if bad.any():
        raise MetadepthError(f"{file}: depth has {int(bad.sum())} NaN/inf pixels; the file is corrupt or not a "
                             "depth map (invalid pixels must be 0)")
    if (depth < 0).any():
        raise MetadepthError(f"{file}: depth has {int((depth < 0).sum())} negative pixels (min {depth.min():.3g}); "
                             "depth must be metres >= 0")
    if frame.intrinsics is not None:
        k = np.asarray(frame.intrinsics, dtype=np.float32)
        if k.shape != (4,) or not np.isfinite(k).all() or (k[:2] <= 0).any():
            raise MetadepthError(f"{file}: intrinsics {k.tolist()} are not 4 finite values with fx, fy > 0")
        frame.intrinsics = k
    frame.depth = depth.astype(np.float32, copy=False)
    return frame


def assign_splits(keys: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """Map each key (a scene, or a frame) to train/val/test by a seeded shuffle: stable across runs and machines.

    Splitting by scene keeps one room out of two splits; a non-zero fraction gets at least one key so a small
    dataset still has every split.
    """
    unique = sorted(set(keys))
    order = np.random.default_rng(seed).permutation(len(unique))
    n = len(unique)
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 and n >= 3 else round(n * test_fraction)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 and n >= 3 else round(n * val_fraction)
    out = {}
    for rank, i in enumerate(order):
        out[unique[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out
