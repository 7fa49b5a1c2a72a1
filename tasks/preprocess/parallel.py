"""Read, check and resize frames in worker processes, streaming: results come back in order, a bounded few at a time.

Why a bounded window: `Executor.map` submits every frame at once and keeps every finished result until the consumer
takes it, so memory would grow with the dataset. Here at most `window` frames are in flight or waiting, whatever the
dataset size. Why `spawn`: a forked child inherits the parent's HDF5 handles and torch/OpenCV thread state, which
can deadlock or corrupt reads; spawned workers start clean and open their own files. This module deliberately
imports no torch, so a worker starts in a fraction of a second.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.io import MetadepthError
from tasks.readers.base import Reader, Sample, check_frame
from tasks.readers.geometry import fit_to_resolution


@dataclass(slots=True)
class Result:
    """A frame at the training resolution, or the one-line reason it could not be used."""

    sample: Sample
    rgb: np.ndarray | None = None
    depth: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    error: str | None = None


def process_sample(reader: Reader, sample: Sample, height: int, width: int) -> Result:
    """Load one frame, check it, and bring it to (height, width); a bad frame becomes an error, not an exception."""
    try:
        frame = check_frame(reader.load(sample), sample.file)
        rgb, depth, intr = fit_to_resolution(frame.rgb, frame.depth, frame.intrinsics, height, width)
    except MetadepthError as err:
        return Result(sample, error=str(err))
    return Result(sample, rgb=rgb, depth=depth, intrinsics=intr)


_WORKER: dict[str, Any] = {}


def _init_worker(reader: Reader, height: int, width: int) -> None:
    _WORKER.update(reader=reader, height=height, width=width)


def _run_worker(sample: Sample) -> Result:
    return process_sample(_WORKER["reader"], sample, _WORKER["height"], _WORKER["width"])


class FramePool:
    """`with FramePool(reader, h, w, workers) as pool: for r in pool.map(samples): ...`; workers=0 runs inline."""

    def __init__(self, reader: Reader, height: int, width: int, workers: int = 0, window: int | None = None):
        self.reader, self.height, self.width = reader, height, width
        self.workers = workers
        self.window = window or max(2, 2 * workers)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> FramePool:
        if self.workers > 0:
            self.reader.close()  # no open handle may be pickled into the workers
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_init_worker, initargs=(self.reader, self.height, self.width))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.reader.close()

    def map(self, samples: Iterable[Sample]) -> Iterator[Result]:
        if self._pool is None:
            for s in samples:
                yield process_sample(self.reader, s, self.height, self.width)
            return
        pending: deque[tuple[Sample, Future[Result]]] = deque()
        try:
            for s in samples:
                pending.append((s, self._pool.submit(_run_worker, s)))
                if len(pending) >= self.window:
                    yield _result(*pending.popleft())
            while pending:
                yield _result(*pending.popleft())
        finally:
            for _, fut in pending:
                fut.cancel()


def _result(sample: Sample, fut: Future[Result]) -> Result:
    try:
        return fut.result()
    except BrokenProcessPool:
        raise MetadepthError(f"{sample.file}: a worker process died while reading this frame (out of memory, or a "
                             "crash in a file library on a corrupt file); retry with --workers 0 to see the error"
                             ) from None
