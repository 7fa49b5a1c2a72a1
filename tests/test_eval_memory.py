"""The evaluation fan-out has bounded memory: N and 3N evaluations (checkpoints x datasets through run_evaluate on a
thread pool in one process, as the Prefect pipeline runs them) reach the same peak RSS, and nothing per evaluation
(model, shard file) stays alive. A deliberately leaking run_evaluate shows the measurement is sensitive enough."""

from __future__ import annotations

import gc

import h5py
import pytest
from tiny_project import ROOT

from benchmarks.eval_fanout import make_fixture, measure
from tasks.params import load_params

# A leaked tiny model + checkpoint costs ~20 MB per evaluation here (measured), so 12 extra leaks are ~240 MB;
# the allocator's jitter between the two runs stayed under 3 MB (docs/performance.md).
TOLERANCE_MB = 25.0


@pytest.fixture(scope="module")
def fanout(tmp_path_factory, single_thread):
    root = tmp_path_factory.mktemp("fanout")
    params, pairs = make_fixture(root, load_params(ROOT / "params.yaml"), models=3, domains=2, test_size=8,
                                 height=32, width=48, encoder="test_convnext")
    return params, root, pairs


def _live(kind: type) -> int:
    gc.collect()
    # type(), not isinstance: isinstance falls back to o.__class__, which torch's deprecated reduce_op answers
    # with a FutureWarning
    return sum(issubclass(type(o), kind) for o in gc.get_objects())


def test_peak_rss_does_not_grow_with_the_number_of_evaluations(fanout):
    from models.network import DepthNet

    params, root, pairs = fanout
    result = measure(params, root, pairs, threads=2, factor=3)
    assert result["n"]["evaluations"] == 6 and result["3n"]["evaluations"] == 18
    assert result["peak_growth_mb"] < TOLERANCE_MB, result
    assert _live(DepthNet) == 0  # every evaluation's model was freed
    assert len(h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE)) == 0  # and its shard closed


def test_the_measurement_catches_a_leak(fanout, monkeypatch):
    import tasks.evaluate

    params, root, pairs = fanout
    kept: list = []
    load = tasks.evaluate.model_from_checkpoint
    monkeypatch.setattr(tasks.evaluate, "model_from_checkpoint", lambda path: kept.append(load(path)) or kept[-1])
    result = measure(params, root, pairs, threads=2, factor=3)
    kept.clear()
    assert result["peak_growth_mb"] > TOLERANCE_MB, result
