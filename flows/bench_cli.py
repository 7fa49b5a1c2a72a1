"""`metadepth bench` (filled in by the benchmarks work)."""

from __future__ import annotations


def register(app) -> None:
    """Add the `bench` command to the main CLI app."""
