"""Where a training seed's outputs live (docs/contracts.md), and which seeds a run may train."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.io import MetadepthError
from tasks.params import Params


@dataclass(frozen=True)
class Layout:
    """The project's data folders; with a training seed, checkpoints/curves/metrics are that seed's `seed<k>/`."""

    root: Path
    seed: int | None = None

    @property
    def _run(self) -> str:
        return f"seed{self.seed}" if self.seed is not None else ""

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def checkpoints(self) -> Path:
        return self.root / "data" / "checkpoints" / self._run

    @property
    def curves(self) -> Path:
        return self.root / "data" / "curves" / self._run

    @property
    def metrics(self) -> Path:
        return self.root / "data" / "metrics" / self._run

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def checkpoint(self, name: str) -> Path:
        return self.checkpoints / f"{name}.pt"

    def curve(self, name: str) -> Path:
        return self.curves / f"{name}.csv"

    def metrics_file(self, model: str, dataset: str) -> Path:
        return self.metrics / f"{model}__{dataset}.json"


def training_seed(params: Params, seed: int | None) -> int:
    """The run's training seed: one of `seeds` (default the first), so a typo cannot train an unlisted seed."""
    if seed is None:
        return params.seeds[0]
    if seed not in params.seeds:
        raise MetadepthError(f"seed {seed} is not in seeds {params.seeds}; add it to seeds in params.yaml")
    return seed
