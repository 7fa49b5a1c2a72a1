"""Cache-key policy shared by DVC and Prefect.

dvc.yaml is the single description of the DAG: each stage's command, file dependencies (data *and* code), the
params keys it reads and its outputs. DVC hashes exactly those for `dvc repro`; the Prefect tasks use the same
stage definitions, resolved by DVC itself (foreach/matrix/interpolation), so the two ways of running can never
disagree about what a stage depends on. A key is built from content only: never a run id, a bare path or a tensor.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from tasks.io import MetadepthError, content_hash, save_hash_memo
from tasks.param_values import subset
from tasks.params import Params

CACHE_POLICY_VERSION = 1  # bump to invalidate every Prefect cache record after a change to this policy


@dataclass(frozen=True)
class StageSpec:
    name: str  # DVC addressing, e.g. "evaluate@ft_meta-loft"
    args: tuple[str, ...]  # `metadepth stage` arguments from the stage's cmd, e.g. ("evaluate", "ft_meta", "loft")
    deps: tuple[str, ...]  # file/dir dependencies, relative to the project root
    params: tuple[str, ...]  # dotted params keys
    outs: tuple[str, ...]

    @property
    def kind(self) -> str:
        return self.args[0]

    def upstream(self, stages: list[StageSpec]) -> list[StageSpec]:
        """Stages whose outputs this one reads (a dep equal to, inside, or containing an out)."""
        def overlaps(a: str, b: str) -> bool:
            return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")

        return [s for s in stages if s is not self and any(overlaps(d, o) for d in self.deps for o in s.outs)]


def _cache_stamp(root: Path) -> tuple[float, float]:
    return tuple(p.stat().st_mtime if p.exists() else 0.0 for p in (root / "dvc.yaml", root / "params.yaml"))


@functools.lru_cache(maxsize=4)
def _load_stages(root: str, stamp: tuple[float, float]) -> tuple[StageSpec, ...]:
    from dvc.dependency.param import ParamsDependency  # imported lazily: DVC costs a second at start-up
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(root) as repo:
            stages = list(repo.index.stages)
    except DvcException as err:
        raise MetadepthError(f"{root}/dvc.yaml: {err}") from None
    specs = []
    for s in stages:
        words = shlex.split(s.cmd if isinstance(s.cmd, str) else " ".join(s.cmd))
        if words[:2] != ["metadepth", "stage"]:
            continue  # not ours (a user's extra stage): DVC runs it, Prefect leaves it alone
        params: list[str] = []
        deps: list[str] = []
        for d in s.deps:
            if isinstance(d, ParamsDependency):
                params += list(d.params)
            else:
                deps.append(str(d.def_path))
        specs.append(StageSpec(s.name, tuple(words[2:]), tuple(deps), tuple(params),
                               tuple(str(o.def_path) for o in s.outs)))
    return tuple(specs)


def load_stages(root: Path) -> list[StageSpec]:
    if not (root / "dvc.yaml").is_file():
        raise MetadepthError(f"{root}/dvc.yaml not found; run metadepth from the project root")
    return list(_load_stages(str(root.resolve()), _cache_stamp(root)))


def find_stage(root: Path, args: tuple[str, ...]) -> StageSpec:
    for s in load_stages(root):
        if s.args == tuple(args):
            return s
    raise MetadepthError(f"no stage in dvc.yaml runs `metadepth stage {' '.join(args)}`; check the name and the "
                         "lists in params.yaml (domains, evaluate.models, finetune.starts, seeds): training and "
                         "evaluate stages end with the seed, e.g. `metadepth stage finetune meta 0`")


def cache_key(root: Path, stage: StageSpec, params: Params) -> str:
    """Hash of what DVC would hash for this stage: dep contents (code included), params subset, command."""
    deps = {}
    for d in stage.deps:
        path = root / d
        deps[d] = content_hash(path) if path.exists() else "missing"
    save_hash_memo()
    payload = {"policy": CACHE_POLICY_VERSION, "stage": stage.name, "args": stage.args, "deps": deps,
               "params": subset(params, list(stage.params))}
    return f"{stage.name}-{hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]}"


def outputs_exist(root: Path, stage: StageSpec) -> bool:
    return all((root / o).exists() for o in stage.outs)
