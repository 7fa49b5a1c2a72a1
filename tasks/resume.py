"""Resumable training: `<name>.resume.pt` beside the final checkpoint, removed once the stage succeeds.

A killed multi-hour run must continue where it stopped, not start over. The snapshot holds everything that decides
the rest of the run (weights, optimiser and scheduler states, RNG states, the data position as a step count, the loss
curve so far) and a key of the inputs it was made from, so a snapshot from other parameters is never picked up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tasks.io import atomic_write


class ResumeState:
    def __init__(self, checkpoint: Path, key: str, every: int = 50):
        self.path = checkpoint.with_suffix(".resume.pt")
        self.key = key
        self.every = every

    def due(self, step: int) -> bool:
        return (step + 1) % self.every == 0

    def save(self, step: int, *, generator: torch.Generator, curve: Any, **stateful: Any) -> None:
        payload = {
            "key": self.key,
            "step": step,
            "states": {name: obj.state_dict() for name, obj in stateful.items()},
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "curve": curve.rows,
        }
        with atomic_write(self.path) as tmp:
            torch.save(payload, tmp)

    def load(self, *, generator: torch.Generator, curve: Any, **stateful: Any) -> int:
        """Restore from the snapshot if it matches these inputs; returns the step to start from."""
        if not self.path.exists():
            return 0
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # a snapshot torn by a crash is worth nothing: start over
            payload = None
        if not isinstance(payload, dict) or payload.get("key") != self.key:
            print(f"ignoring {self.path}: it was made from other inputs or is unreadable; starting over")
            self.clear()
            return 0
        for name, obj in stateful.items():
            obj.load_state_dict(payload["states"][name])
        generator.set_state(payload["generator"])
        torch.set_rng_state(payload["torch_rng"])
        curve.rows = payload["curve"]
        print(f"resuming from {self.path} at step {payload['step']}")
        return int(payload["step"])

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
