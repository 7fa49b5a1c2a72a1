"""`metadepth stage KIND ARGS...` to the stage code: the one place that decides whether a stage goes through torchrun.

The stage functions never know: they run the same in a plain process and in every torchrun worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.distributed import is_distributed
from tasks.io import MetadepthError
from tasks.launch import launch
from tasks.params import Params
from tasks.stages import STAGES
from tasks.telemetry import NullTracker


def run_stage(params: Params, root: Path, args: tuple[str, ...], tracker: Any = None) -> Any:
    """Run stage `args[0]` with its arguments; training stages get the tracker (MLflow in the flows)."""
    if not args or args[0] not in STAGES:
        raise MetadepthError(f"unknown stage {args[0] if args else None!r}; stages are {', '.join(STAGES)}")
    stage, values = STAGES[args[0]], tuple(args[1:])
    names, kwargs = stage.call_args(values)
    tracker = tracker or NullTracker()
    if stage.trains:
        if params.runtime.numerics.nproc_per_node > 1 and not is_distributed():
            return launch(params, root, stage, names, kwargs["seed"], tracker)
        kwargs["tracker"] = tracker
    return stage.function()(params, root, *names, **kwargs)
