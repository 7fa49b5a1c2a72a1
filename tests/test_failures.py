"""Failure paths: numerical faults stop with a clear message, interrupted writes leave no partial output."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from tiny_project import ROOT, tiny_params

import tasks.training
from tasks.checkpoints import load_checkpoint, save_checkpoint
from tasks.finetune import run_finetune
from tasks.io import MetadepthError, atomic_write
from tasks.params import load_params
from tasks.preprocess import prepare as prepare_mod
from tasks.preprocess.prepare import prepare


@pytest.fixture(scope="module")
def project(tiny_project):
    return tiny_project(finetune={"steps": 6, "batch_size": 4, "settings": {"log_every": 1}},
                        runtime={"host": {"resume_every": 2}})


def leftovers(directory):
    return [p.name for p in directory.rglob("*") if ".tmp-" in p.name]


def test_nan_loss_stops_with_step_and_last_good_state(project, monkeypatch):
    root, params = project
    real = tasks.training.depth_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(tasks.training, "depth_loss", poisoned)
    with pytest.raises(MetadepthError) as err:
        run_finetune(params, root, "scratch")
    msg = str(err.value)
    assert "loss became nan at step 3" in msg and "ft_scratch.resume.pt" in msg and "\n" not in msg
    assert not (root / "data" / "checkpoints" / "seed0" / "ft_scratch.pt").exists()
    assert torch.load(root / "data" / "checkpoints" / "seed0" / "ft_scratch.resume.pt", weights_only=True)["step"] == 2
    (root / "data" / "checkpoints" / "seed0" / "ft_scratch.resume.pt").unlink()


def test_interrupted_shard_write_leaves_nothing(project, monkeypatch):
    root, params = project
    real = prepare_mod.write_split

    def dies_midway(path, batches, *args, **kwargs):
        if path.name == "val.h5":
            raise OSError(28, "No space left on device")
        return real(path, batches, *args, **kwargs)

    monkeypatch.setattr(prepare_mod, "write_split", dies_midway)
    before = sorted(p.name for p in (root / "data" / "prepared" / "loft").iterdir())
    with pytest.raises(MetadepthError, match="disk full"):
        prepare(params, root, "loft")
    assert sorted(p.name for p in (root / "data" / "prepared" / "loft").iterdir()) == before  # old output intact
    assert leftovers(root / "data") == []
    monkeypatch.setattr(prepare_mod, "write_split", real)
    prepare(params, root, "studio")  # a clean re-run works
    with h5py.File(root / "data" / "prepared" / "studio" / "train.h5") as f:
        assert f["rgb"].shape[0] == params.data.train_size


def test_interrupted_checkpoint_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    model = torch.nn.Linear(2, 2)
    save_checkpoint(path, model, {"encoder": "x"}, step=1, data_hash="a")
    good = path.read_bytes()

    def torn_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, {"encoder": "x"}, step=2, data_hash="a")
    assert path.read_bytes() == good and leftovers(tmp_path) == []


def test_atomic_write_replaces_a_directory_whole(tmp_path):
    target = tmp_path / "out"
    with atomic_write(target) as tmp:
        tmp.mkdir()
        (tmp / "a.json").write_text(json.dumps({"v": 1}))
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.mkdir()
        (tmp / "a.json").write_text("{")
        raise RuntimeError("boom")
    assert json.loads((target / "a.json").read_text()) == {"v": 1} and leftovers(tmp_path) == []
    with atomic_write(target) as tmp:
        tmp.mkdir()
        np.save(tmp / "b.npy", np.zeros(1))
    assert sorted(p.name for p in target.iterdir()) == ["b.npy"]


def test_reptile_skips_a_nonfinite_step_when_asked():
    from models.reptile import Reptile

    model = torch.nn.Linear(3, 1)
    before = [p.detach().clone() for p in model.parameters()]
    nan_loss = lambda m, batch: m(batch).sum() * float("nan")  # noqa: E731
    stats = Reptile(model, nan_loss, skip_nonfinite=True).meta_step([torch.ones(2, 3)])
    assert stats["skipped"] == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    Reptile(model, nan_loss).meta_step([torch.ones(2, 3)])  # default: applied (and caught by the stage)
    assert not all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("skip", [False, True])
def test_meta_init_nan_stops_or_skips(project, monkeypatch, skip):
    from tasks.meta_init import run_meta_init

    root, _ = project
    tiny_params(root / "params.yaml", meta={"settings": {"steps": 3, "batch_size": 4, "log_every": 1,
                                                         "skip_nonfinite_steps": skip}})
    params = load_params(root / "params.yaml")
    real = tasks.training.depth_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 6 else loss  # inside outer step 1

    monkeypatch.setattr(tasks.training, "depth_loss", poisoned)
    if skip:
        run_meta_init(params, root, "meta")
        assert load_checkpoint(root / "data" / "checkpoints" / "seed0" / "meta.pt")["step"] == 3
    else:
        with pytest.raises(MetadepthError, match="meta_init meta: loss became nan at step 1"):
            run_meta_init(params, root, "meta")


def test_second_run_waits_for_the_first_with_a_message(tmp_path):
    import subprocess
    import sys
    import time

    code = ("import sys, time; from pathlib import Path; from tasks.io import project_lock\n"
            "with project_lock(Path(sys.argv[1]), sys.argv[2]):\n"
            "    print('got', sys.argv[2], time.time(), flush=True); time.sleep(float(sys.argv[3]))\n")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    first = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), "first", "3"], env=env,
                             stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().startswith("got first")
    start = time.time()
    second = subprocess.run([sys.executable, "-c", code, str(tmp_path), "second", "0"], env=env,
                            capture_output=True, text=True, timeout=60)
    first.wait(timeout=30)
    assert "waiting for the pipeline run already in progress" in second.stdout and "first" in second.stdout
    assert "got second" in second.stdout and time.time() - start > 1.0


def test_interrupted_metrics_and_report_writes_leave_no_half_file(tiny_project, tmp_path, monkeypatch):
    """The evaluate and report stages write through atomic_write: a failure mid-write leaves no partial file."""
    import pathlib

    from tasks.evaluate import run_evaluate
    from tasks.report import run_report

    root, params = tiny_project(dest=tmp_path, finetune={"steps": 2, "batch_size": 4, "settings": {"log_every": 1},
                                                         "starts": ["scratch"]},
                                evaluate={"batch_size": 4, "models": ["ft_scratch"]})
    run_finetune(params, root, "scratch")
    for d in params.domains:
        run_evaluate(params, root, "ft_scratch", d)
    metrics = root / "data" / "metrics" / "seed0" / "ft_scratch__studio.json"
    good = metrics.read_text()
    real_write = pathlib.Path.write_text

    def torn(self, data, *a, **k):
        real_write(self, data[: len(data) // 2], *a, **k)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", torn)
    with pytest.raises(MetadepthError, match="disk full"):
        run_evaluate(params, root, "ft_scratch", "studio")
    with pytest.raises(MetadepthError, match="disk full"):
        run_report(params, root)
    monkeypatch.setattr(pathlib.Path, "write_text", real_write)
    assert metrics.read_text() == good
    assert leftovers(root) == []
    run_report(params, root)  # a clean re-run works
    assert json.loads((root / "reports" / "metrics.json").read_text())["zero_shot"]
