"""Build a tiny, self-contained copy of the project (git + DVC repo) for end-to-end tests.

The copy carries the real dvc.yaml and code; only params.yaml is shrunk so the whole DAG runs in seconds on 2 cores.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
COPY = ["flows", "tasks", "models", "profiles", "data/raw", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore",
        "pyproject.toml"]

TINY = {
    "seeds": [0],
    "data": {"domains": ["loft", "studio"], "height": 32, "width": 48, "train_size": 16, "val_size": 4,
             "test_size": 4, "render_batch": 16},
    "model": {"encoder": "test_convnext"},
    "meta": {"steps": 2, "batch_size": 4, "log_every": 1},
    "finetune": {"steps": 3, "batch_size": 4, "log_every": 1},
    "evaluate": {"batch_size": 4, "models": ["ft_scratch", "ft_meta"]},
    "report": {"qualitative_samples": 1},
}


def tiny_params(path: Path, **overrides: dict) -> None:
    yaml = YAML()
    raw = yaml.load(path.read_text())
    for section, values in {**TINY, **overrides}.items():
        if isinstance(values, dict):
            raw[section].update(values)
        else:
            raw[section] = values
    with open(path, "w") as f:
        yaml.dump(raw, f)


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


STAGE_ORDER = ("prepare", "init", "meta_init", "supervised", "finetune", "evaluate", "report")


def stage_commands(params, upto: str = "report") -> list[tuple[str, ...]]:
    """Every `metadepth stage` command of the DAG in an order that respects it, up to and including `upto`."""
    seeds = [str(s) for s in params.seeds]
    commands = {
        "prepare": [("prepare", d) for d in params.data.domains],
        "init": [("init", k, s) for s in seeds for k in params.init.kinds],
        "meta_init": [("meta_init", v, s) for s in seeds for v in params.meta.variants],
        "supervised": [("supervised", s) for s in seeds],
        "finetune": [("finetune", i, s) for s in seeds for i in params.finetune.inits],
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
