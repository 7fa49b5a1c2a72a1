"""The check of a `metadepth stage KIND ARGS...` command line against the stage registry (tasks/stages.py).

Apart from flows/pipeline.py because that module imports Prefect (seconds): a typo in a stage command, and
`metadepth stage --help`, must answer without it.
"""

from __future__ import annotations

import functools
from pathlib import Path

from tasks.caching import find_stage
from tasks.io import MetadepthError
from tasks.params import load_params
from tasks.stages import STAGES


def check_stage_args(root: Path, args: tuple[str, ...]) -> None:
    """Reject a bad `metadepth stage` command line with one line naming the argument, before any flow starts."""
    if not args or args[0] not in STAGES:
        got = repr(args[0]) if args else "nothing"
        raise MetadepthError(f"unknown stage {got}; stages are {', '.join(STAGES)}")
    kind, rest, wanted = args[0], args[1:], STAGES[args[0]].args
    params = load_params(root / "params.yaml").model_dump(mode="json")
    choices = {a.choices: [str(v) for v in functools.reduce(lambda node, k: node[k], a.choices.split("."), params)]
               for a in wanted}
    if len(rest) != len(wanted):
        names = " ".join(a.name for a in wanted) or "no arguments"
        example = " ".join(["metadepth stage", kind, *(choices[a.choices][0] for a in wanted)])
        raise MetadepthError(f"stage {kind}: expected {names}, got {len(rest)} argument(s); e.g. `{example}`")
    for value, a in zip(rest, wanted, strict=True):
        if value not in choices[a.choices]:
            raise MetadepthError(f"stage {kind}: unknown {a.name} {value!r}; choose from {a.choices} "
                                 f"{choices[a.choices]} (params.yaml)")
    find_stage(root, args)  # dvc.yaml must agree (it is built from the same lists)
