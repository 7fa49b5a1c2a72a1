"""The command line of `metadepth stage KIND ARGS...`: which kinds there are, their arguments, and the check.

Apart from flows/pipeline.py because that module imports Prefect (seconds): a typo in a stage command, and
`metadepth stage --help`, must answer without it.
"""

from __future__ import annotations

import functools
from pathlib import Path

from tasks.caching import find_stage
from tasks.io import MetadepthError
from tasks.params import load_params

STAGE_KINDS = ("prepare", "init", "meta_init", "finetune", "evaluate", "report")
# The arguments of `metadepth stage KIND ...`: (name, the params.yaml list its values come from).
SEED = ("SEED", "seeds")
STAGE_ARGS: dict[str, list[tuple[str, str]]] = {
    "prepare": [("DATASET", "data.domains")], "init": [("KIND", "init.kinds"), SEED],
    "meta_init": [("VARIANT", "meta.variants"), SEED], "finetune": [("START", "finetune.inits"), SEED],
    "evaluate": [("MODEL", "evaluate.models"), ("DATASET", "data.domains"), SEED], "report": [],
}


def check_stage_args(root: Path, args: tuple[str, ...]) -> None:
    """Reject a bad `metadepth stage` command line with one line naming the argument, before any flow starts."""
    if not args or args[0] not in STAGE_KINDS:
        got = repr(args[0]) if args else "nothing"
        raise MetadepthError(f"unknown stage {got}; stages are {', '.join(STAGE_KINDS)}")
    kind, rest, wanted = args[0], args[1:], STAGE_ARGS[args[0]]
    params = load_params(root / "params.yaml").model_dump(mode="json")
    choices = {key: [str(v) for v in functools.reduce(lambda node, k: node[k], key.split("."), params)]
               for _, key in wanted}
    if len(rest) != len(wanted):
        names = " ".join(name for name, _ in wanted) or "no arguments"
        example = " ".join(["metadepth stage", kind, *(choices[key][0] for _, key in wanted)])
        raise MetadepthError(f"stage {kind}: expected {names}, got {len(rest)} argument(s); e.g. `{example}`")
    for value, (name, key) in zip(rest, wanted, strict=True):
        if value not in choices[key]:
            raise MetadepthError(f"stage {kind}: unknown {name} {value!r}; choose from {key} {choices[key]} "
                                 "(params.yaml)")
    find_stage(root, args)  # dvc.yaml must agree (it is built from the same lists)
