"""Statistics over training seeds: a mean with its 95% Student-t interval, and the one relative change.

Runs are paired by seed: seed k of a model against seed k of its baseline (same data order, same initial weights
where the stages share a start), so a relative change is computed per seed first and the interval is over those.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

from tasks.io import MetadepthError


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its 95% confidence interval; `low`/`high` are None for a single seed."""

    mean: float
    low: float | None
    high: float | None
    n: int

    def text(self, fmt: str = "{:.3f}", unit: str = "") -> str:
        point = fmt.format(self.mean) + unit
        if self.low is None or self.high is None:
            return f"{point} (n={self.n})"
        return f"{point} [{fmt.format(self.low)}, {fmt.format(self.high)}]{unit} (n={self.n})"

    def as_dict(self, digits: int = 5) -> dict[str, Any]:
        r = lambda v: None if v is None else round(v, digits)  # noqa: E731
        return {"mean": r(self.mean), "ci95_low": r(self.low), "ci95_high": r(self.high), "n": self.n}


def t_quantile(df: int) -> float:
    """t(0.975, df): the multiplier of the standard error for a two-sided 95% interval."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return float(stats.t.ppf(0.975, df))


def mean_ci(values: Sequence[float]) -> Interval:
    """Mean and 95% t-interval (mean +- t(0.975, n-1) * s / sqrt(n), s the sample standard deviation)."""
    if not values:
        raise ValueError("mean_ci needs at least one value")
    mean = statistics.fmean(values)
    if len(values) == 1:
        return Interval(mean, None, None, 1)
    half = t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values))


def relative_change(values: Sequence[float], baseline: Sequence[float]) -> Interval:
    """The report's one relative change, in %: per seed k `100 * (values[k] / baseline[k] - 1)`, then mean_ci.

    Every number called "relative change" in the report (table cells, intervals, claims) comes from here.
    """
    if len(values) != len(baseline):
        raise MetadepthError(f"relative change needs the same seeds for model and baseline, got {len(values)} and "
                             f"{len(baseline)} runs; evaluate every model on every seed")
    return mean_ci([100.0 * (v / b - 1.0) for v, b in zip(values, baseline, strict=True)])
