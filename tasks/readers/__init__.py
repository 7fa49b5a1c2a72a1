"""The registry of real-dataset readers: `data.sources.<name>.format` (or `metadepth data ingest --format`) picks one.

Every reader yields the same thing (tasks/readers/base.py): RGB uint8 in RGB order, planar depth in metres
with 0 = invalid, and intrinsics when the format knows them. To add a format, subclass `Reader` in its own module
and list it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.io import MetadepthError
from tasks.readers.base import Frame, Reader, Sample
from tasks.readers.hypersim import HypersimReader
from tasks.readers.nyu import NyuReader
from tasks.readers.rendered import Hm3dReader, RenderedReader, ReplicaReader, VaReader

READERS: dict[str, type[Reader]] = {
    cls.format: cls for cls in (NyuReader, HypersimReader, RenderedReader, ReplicaReader, Hm3dReader, VaReader)
}

__all__ = ["READERS", "Frame", "Reader", "Sample", "get_reader", "make_reader"]


def get_reader(fmt: str) -> type[Reader]:
    if fmt not in READERS:
        raise MetadepthError(f"unknown dataset format {fmt!r}; formats are {', '.join(READERS)} "
                             "(`metadepth data formats` lists their options)")
    return READERS[fmt]


def make_reader(fmt: str, path: Path | str, options: Mapping[str, Any] | None = None) -> Reader:
    """A reader for the dataset at `path` (a folder, or NYU's .mat file), with validated options."""
    return get_reader(fmt)(path, options)
