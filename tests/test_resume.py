"""Resume after a real kill -9: the final weights equal those of an uninterrupted run (CPU, same seed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_project import ROOT, tiny_params

from tasks.checkpoints import load_checkpoint
from tasks.params import load_params

STEPS = 40
SCRIPT = """
import sys
from pathlib import Path
from tasks.params import load_params
from tasks.finetune import run_finetune
from tasks.meta_init import run_meta_init
root = Path(sys.argv[2])
params = load_params(root / "params.yaml")
run_finetune(params, root, "scratch") if sys.argv[1] == "finetune" else run_meta_init(params, root)
"""


@pytest.fixture
def make_project(tiny_project):
    """A project at `root` with prepared data and the scratch start, STEPS steps per training stage."""
    return lambda root: tiny_project(
        dest=root, meta={"settings": {"steps": STEPS, "batch_size": 4, "log_every": 1}},
        finetune={"steps": STEPS, "batch_size": 4, "settings": {"log_every": 1}},
        runtime={"host": {"num_threads": 1, "resume_every": 3}})


def start(stage: str, root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, stage, str(root)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("stage, out", [("finetune", "ft_scratch"), ("meta_init", "meta")])
def test_kill_9_then_resume_equals_uninterrupted(make_project, tmp_path, stage, out):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    make_project(killed)
    make_project(clean)
    resume = killed / "data" / "checkpoints" / "seed0" / f"{out}.resume.pt"

    reference = start(stage, clean)  # the uninterrupted run, alongside (same thread settings, own process)
    proc = start(stage, killed)
    deadline = time.time() + 120
    while not resume.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"run ended before it could be killed:\n{proc.stdout.read()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert resume.exists() and not (killed / "data" / "checkpoints" / "seed0" / f"{out}.pt").exists()

    again = start(stage, killed)
    log = again.communicate(timeout=300)[0]
    assert again.returncode == 0, log
    assert "resuming from" in log
    assert not resume.exists(), "the resume file is removed on success"

    ref_log = reference.communicate(timeout=300)[0]
    assert reference.returncode == 0, ref_log
    a = load_checkpoint(killed / "data" / "checkpoints" / "seed0" / f"{out}.pt")
    b = load_checkpoint(clean / "data" / "checkpoints" / "seed0" / f"{out}.pt")
    assert a["step"] == b["step"] == STEPS
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    curve = (killed / "data" / "curves" / "seed0" / f"{out}.csv").read_text()
    assert curve == (clean / "data" / "curves" / "seed0" / f"{out}.csv").read_text()


def test_resume_file_from_other_inputs_is_ignored(make_project, tmp_path):
    from tasks.finetune import run_finetune

    root = tmp_path / "p"
    make_project(root)
    params = load_params(root / "params.yaml")
    stale = root / "data" / "checkpoints" / "seed0" / "ft_scratch.resume.pt"
    torch.save({"key": "other", "step": 5}, stale)
    tiny_params(root / "params.yaml", finetune={"steps": 2, "batch_size": 4, "settings": {"log_every": 1}})
    run_finetune(load_params(root / "params.yaml"), root, "scratch")
    assert load_checkpoint(root / "data" / "checkpoints" / "seed0" / "ft_scratch.pt")["step"] == 2
    assert not stale.exists() and params.finetune.steps == STEPS
