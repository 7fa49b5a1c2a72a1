"""ShardDataset keeps its HDF5 file and datasets open per process: one lookup per process instead of per sample,
a fresh handle after pickling (DataLoader workers) or in another process, and a clean close."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from tiny_project import ROOT

from tasks.preprocess.shards import ShardDataset, write_split


def _write(path: Path, n: int = 12, chunk_frames: int = 1, compression: str = "none") -> Path:
    rng = np.random.default_rng(0)
    batch = {"rgb": rng.integers(0, 255, (n, 8, 12, 3), dtype=np.uint8),
             "depth": rng.uniform(0.5, 5.0, (n, 8, 12)).astype(np.float32)}
    write_split(path, [batch], n, {"dataset": "t"}, split="train", chunk_frames=chunk_frames,
                compression=compression, min_depth=0.1, max_depth=10.0)
    return path


@pytest.fixture
def shard(tmp_path: Path) -> Path:
    return _write(tmp_path / "train.h5")


def _open_files() -> int:
    return len(h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE))


@pytest.mark.parametrize("chunk_frames, compression", [(1, "none"), (4, "lzf")])
def test_reads_match_the_file(tmp_path, chunk_frames, compression):
    path = _write(tmp_path / "s.h5", chunk_frames=chunk_frames, compression=compression)
    with h5py.File(path) as f:
        rgb, depth = f["rgb"][:], f["depth"][:]
    with ShardDataset(path) as data:
        for i in (3, 0, 11, 3):
            s = data[i]
            assert torch.equal(s["rgb"], torch.from_numpy(rgb[i]).permute(2, 0, 1).float() / 255.0)
            assert torch.equal(s["depth"][0], torch.from_numpy(depth[i])) and int(s["index"]) == i


def test_datasets_are_looked_up_once_per_process(shard, monkeypatch):
    """The per-sample `file["rgb"]` lookup cost more than the read itself (docs/performance.md)."""
    data = ShardDataset(shard)
    lookups = []
    original = h5py.File.__getitem__
    monkeypatch.setattr(h5py.File, "__getitem__", lambda self, key: lookups.append(key) or original(self, key))
    for i in range(12):
        data[i]
    assert sorted(k for k in lookups if k != "/") == ["depth", "rgb"]
    data.close()


def test_close_releases_the_file_and_a_later_read_reopens_it(shard):
    before = _open_files()
    data = ShardDataset(shard)
    data[0]
    assert _open_files() == before + 1
    data.close()
    assert _open_files() == before
    data.close()  # idempotent
    assert data[1]["index"] == 1  # reopened lazily
    data.close()
    assert _open_files() == before


def test_pickled_copy_opens_its_own_handle(shard):
    data = ShardDataset(shard)
    data[0]
    copy = pickle.loads(pickle.dumps(data))  # what a spawned DataLoader worker receives
    assert copy._file is None and copy._rgb is None  # no handle crosses the pickle
    assert torch.equal(copy[5]["depth"], data[5]["depth"])
    assert copy._file is not None and copy._file is not data._file
    copy.close()
    assert data[6]["index"] == 6  # the original's handle is untouched
    data.close()


def test_handle_from_another_process_is_replaced_not_used(shard):
    """After a fork the inherited handle belongs to the parent: the child opens its own and never closes the
    parent's (simulated here by pretending the handle was opened by another pid)."""
    data = ShardDataset(shard)
    data[0]
    inherited = data._file
    data._pid = -1
    assert data[1]["index"] == 1
    assert data._file is not inherited and inherited.id.valid  # parent's handle still open
    data.close()
    assert inherited.id.valid  # close() in the "child" left the parent's handle alone
    inherited.close()


FORKED_READS = """
import sys, torch
from tasks.preprocess.shards import ShardDataset
data = ShardDataset(sys.argv[1])
expected = torch.stack([data[i]["depth"] for i in range(12)])  # the parent opened the file before the fork
loader = torch.utils.data.DataLoader(data, batch_size=3, num_workers=2, multiprocessing_context="fork")
assert torch.equal(torch.cat([b["depth"] for b in loader]), expected)
data.close()
print("ok")
"""


def _python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter: forking this test process (with the session's Prefect and MLflow
    threads in it) would test pytest's state, not ShardDataset's."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_forked_dataloader_workers_read_correctly_after_the_parent_read(shard):
    r = _python(FORKED_READS, str(shard))
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


STAGE_LOADER_AFTER_A_FLOW = """
import itertools, sys, torch
from prefect import flow
from tasks.runtime import Runtime
from tasks.distributed import batches_at
from tasks.params import load_params
from tasks.preprocess.shards import ShardDataset

@flow
def stage():  # what every stage is: a Prefect flow in this process
    params = load_params(sys.argv[2])
    params = params.model_copy(update={"runtime": params.runtime.model_copy(update={
        "host": params.runtime.host.model_copy(update={"num_workers": 2})})})
    options = Runtime.from_params(params.runtime).loader_kwargs
    batches = batches_at(ShardDataset(sys.argv[1]), 3, 0, itertools.count(), **options)  # meta_init, finetune
    sizes = [next(batches)["depth"].shape[0] for _ in range(8)]
    del batches  # the workers exit here
    loader = torch.utils.data.DataLoader(ShardDataset(sys.argv[1]), batch_size=3, **options)  # evaluate
    return sizes + [b["depth"].shape[0] for b in loader]  # a whole pass: the workers exit at its end

assert stage() == [3] * 12
print("ok")
"""


def test_stage_loader_workers_survive_a_prefect_process(shard, prefect_api):
    """Shard loaders with workers, in a process that runs Prefect flows (as `metadepth stage` and the pipeline
    do): forked workers died there with exit code 1, so Runtime.loader_kwargs spawns them."""
    r = _python(STAGE_LOADER_AFTER_A_FLOW, str(shard), str(ROOT / "params.yaml"),
                env={"PREFECT_API_URL": prefect_api})
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
