"""Where training reports to: a tracker (MLflow in the flows, a no-op in library use) and the loss-curve CSV."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Protocol

from tasks.io import atomic_write


class Tracker(Protocol):
    """Where stages report progress; MLflow in the flows, a no-op in plain library use.

    A tracker may also have `progress(done: int, total: int)`, called after every training step (the Prefect flows
    use it for a live progress artifact); it is optional so plain library use needs nothing but `log_metrics`.
    """

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


class NullTracker:
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass


def report_progress(stage: str, step: int, total: int, loss: float, every_pct: int = 10,
                    tracker: Any = None, echo: bool = True) -> None:
    """A plain log line every 10% (with `echo`): rich's bar is invisible in DVC/Prefect logs and CI, these lines
    are not; on a terminal the bar itself shows the loss and the lines stay off it.

    Every step also goes to the tracker's optional `progress(done, total)` hook (see `Tracker`); throttling is the
    hook's business, so the training loops need not know what is behind it.
    """
    every = max(1, total * every_pct // 100)
    if echo and ((step + 1) % every == 0 or step + 1 == total):
        print(f"{stage}: step {step + 1}/{total} ({100 * (step + 1) // total}%), loss {loss:.4f}", flush=True)
    hook = getattr(tracker, "progress", None)
    if hook is not None:
        hook(step + 1, total)


class CurveWriter:
    """Per-step losses as CSV (a DVC plot and the report's loss curve), written atomically at the end."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns, self.rows = path, columns, []

    def add(self, row: dict[str, float]) -> None:
        self.rows.append([row.get(c, "") for c in self.columns])

    def close(self) -> None:
        with atomic_write(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.columns)
            w.writerows(self.rows)
