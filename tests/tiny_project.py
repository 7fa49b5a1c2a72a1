"""The tiny project the tests run: shrunk params, the DAG run in-process, and a git + DVC copy for end-to-end tests.

The git + DVC copy carries the real dvc.yaml and code; only params.yaml is shrunk so the whole DAG runs in seconds on
2 cores. `Templates` builds each pipeline stage once per session and hands out copies (conftest's `tiny_project`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
COPY = ["flows", "tasks", "models", "profiles", "data/raw", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore",
        "pyproject.toml"]

# The tests' network: test_convnext needs all its levels and five decoder widths, whatever params.yaml's encoder is.
TINY_MODEL = {"encoder": "test_convnext", "encoder_levels": None, "decoder_channels": [16, 32, 64, 128, 256]}
TINY = {
    "seeds": [0],
    "domains": ["loft", "studio"],
    "data": {"height": 32, "width": 48, "train_size": 16, "val_size": 4, "test_size": 4},
    "model": TINY_MODEL,
    "meta": {"settings": {"steps": 2, "batch_size": 4, "log_every": 1}},
    "finetune": {"steps": 3, "batch_size": 4, "settings": {"log_every": 1}},
    "evaluate": {"batch_size": 4, "models": ["ft_scratch", "ft_meta"]},
    "report": {"qualitative_samples": 1},
    "runtime": {"host": {"render_batch": 16}},
}
GROUPS = {"settings", "numerics", "host"}  # sub-sections an override merges into; other dict values replace


def _merge(raw: dict, values: dict) -> None:
    for key, value in values.items():
        if key in GROUPS and isinstance(value, dict):
            _merge(raw[key], value)
        else:
            raw[key] = value


def tiny_params(path: Path, **overrides: dict) -> None:
    yaml = YAML()
    raw = yaml.load(path.read_text())
    for values in (TINY, overrides):
        for section, value in values.items():
            if isinstance(value, dict):
                _merge(raw[section], value)
            else:
                raw[section] = value
    with open(path, "w") as f:
        yaml.dump(raw, f)


def write_params(root: Path, **overrides: dict):
    """root/params.yaml = the project's params.yaml, shrunk to TINY, then `overrides` (section -> values; the
    sub-sections settings, numerics and host merge key by key, so meta={"settings": {"steps": 5}} keeps the rest)."""
    from tasks.params import load_params

    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    tiny_params(root / "params.yaml", **overrides)
    return load_params(root / "params.yaml")


def make_tiny_project(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)
    tiny_params(dest / "params.yaml")
    run = lambda *cmd: subprocess.run(cmd, cwd=dest, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "-q")
    run("git", "config", "user.email", "test@example.com")
    run("git", "config", "user.name", "test")
    run("dvc", "init", "-q")
    run("dvc", "config", "core.analytics", "false")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "tiny project")
    return dest


def copy_project(src: Path, dest: Path) -> Path:
    """A copy of a tiny project, its git and DVC state (and run outputs, DVC cache, Prefect results) included."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def sh(root: Path, *cmd: str, ok: bool = True) -> subprocess.CompletedProcess:
    """Run a command in a tiny project as a user would; `ok`: it must succeed (else its output is the failure)."""
    # PYTHONPATH: the stage processes must run the copied code that DVC hashes.
    env = {**os.environ, "PYTHONPATH": str(root)}
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    if ok:
        assert r.returncode == 0, f"{cmd} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


STAGE_ORDER = ("prepare", "init", "meta_init", "supervised", "finetune", "evaluate", "report")


def stage_commands(params, upto: str = "report") -> list[tuple[str, ...]]:
    """Every `metadepth stage` command of the DAG in an order that respects it, up to and including `upto`."""
    seeds = [str(s) for s in params.seeds]
    commands = {
        "prepare": [("prepare", d) for d in params.domains],
        "init": [("init", k, s) for s in seeds for k in params.init.kinds],
        "meta_init": [("meta_init", v, s) for s in seeds for v in params.meta.variants],
        "supervised": [("supervised", s) for s in seeds],
        "finetune": [("finetune", i, s) for s in seeds for i in params.finetune.starts],
        "evaluate": [("evaluate",)],
        "report": [("report",)],
    }
    order = STAGE_ORDER[: STAGE_ORDER.index(upto) + 1]
    return [c for kind in order for c in commands[kind]]


def run_stages(params, root: Path, upto: str = "report", start: str = "prepare") -> None:
    """Run the DAG's stages in-process through the stage dispatcher, from `start` to `upto` (both included)."""
    from tasks.dispatch import run_stage

    first = STAGE_ORDER.index(start)
    for command in stage_commands(params, upto):
        if STAGE_ORDER.index(command[0]) >= first:
            run_stage(params, root, command)


@contextlib.contextmanager
def one_thread():
    """Tiny nets on a small shared CPU: intra-op threads mostly add contention (erratic 10x slowdowns). Restores the
    thread count after, also when a stage set its own (runtime.host.num_threads)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# The params sections a stage's outputs depend on (coarser than dvc.yaml's keys, so never too few). A copied output
# is the one the stage would have written: the stages are deterministic on CPU (test_stages checks it).
READS = {"prepare": {"data", "domains"}, "init": {"seeds", "model", "init"}}


class Templates:
    """The tiny DAG, each stage run once on the tiny params, and copies of its outputs.

    Level `upto` is a project with every stage up to and including `upto` run; it is built from the level before
    it, on first use only, so a session pays for each stage at most once.
    """

    def __init__(self, base: Path):
        self.base = base
        self.params = write_params(base)
        self.levels: dict[str, Path] = {}

    def level(self, upto: str) -> Path:
        if upto not in self.levels:
            i = STAGE_ORDER.index(upto)
            dest = self.base / upto
            if i:
                shutil.copytree(self.level(STAGE_ORDER[i - 1]), dest, symlinks=True)
            else:
                write_params(dest)
            with one_thread():
                run_stages(self.params, dest, upto=upto, start=upto)
            self.levels[upto] = dest
        return self.levels[upto]

    def reusable(self, params, upto: str) -> str | None:
        """The last stage up to `upto` whose outputs (and those of the stages before it) `params` would not change."""
        mine, theirs = params.model_dump(), self.params.model_dump()
        last = None
        for kind in STAGE_ORDER[: STAGE_ORDER.index(upto) + 1]:
            sections = READS.get(kind, set(mine) | set(theirs))  # later stages: every section must match
            if any(mine.get(s) != theirs.get(s) for s in sections):
                break
            last = kind
        return last

    def project(self, dest: Path, upto: str | None = "init", **overrides: dict):
        """A project at dest on the tiny params + overrides with the stages up to `upto` run: the outputs these
        params leave unchanged are copied from the templates, the rest is run here. Returns its params."""
        params = write_params(dest, **overrides)
        if upto is None:
            return params
        reused = self.reusable(params, upto)
        if reused:
            for name in ("data", "reports"):
                if (self.level(reused) / name).exists():
                    shutil.copytree(self.level(reused) / name, dest / name, dirs_exist_ok=True)
        if reused != upto:
            start = STAGE_ORDER[STAGE_ORDER.index(reused) + 1] if reused else STAGE_ORDER[0]
            with one_thread():
                run_stages(params, dest, upto=upto, start=start)
        return params
