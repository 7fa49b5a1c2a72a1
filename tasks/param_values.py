"""What runs take from validated params: `-S` overrides checked or written back, the values of dotted keys, hashes.

Apart from tasks/params.py (the schema) so the schema file stays one job; the file editing itself is
tasks/params_file.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tasks.io import atomic_write
from tasks.params import Params, validate
from tasks.params_file import overridden


def check_overrides(path: Path, overrides: list[str]) -> Params:
    """The params `-S` overrides would give, validated, without writing anything (a CLI checks them up front)."""
    return validate(overridden(path, overrides)[1], f"{path} with overrides")


def apply_overrides(path: Path, overrides: list[str]) -> Params:
    """Write `-S` overrides into params.yaml, as `dvc exp run -S` does, so DVC and Prefect see the same values.
    Only the overridden values change in the file (tasks/params_file.py); nothing is written if they are invalid."""
    text, raw = overridden(path, overrides)
    params = validate(raw, f"{path} with overrides")
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return params


def subset(params: Params, keys: list[str]) -> dict[str, Any]:
    """The values of dotted keys, e.g. ['seed', 'data.height'], as DVC's `params:` lists name them."""
    full = params.model_dump(mode="json")
    out: dict[str, Any] = {}
    for key in keys:
        node: Any = full
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def result_params(params: Params) -> dict[str, Any]:
    """Every setting that can change results (all but `tracking`): what pipeline runs log and hash."""
    return params.model_dump(mode="json", exclude={"tracking"})


def params_hash(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
