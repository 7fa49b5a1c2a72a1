"""MLflow model logging: a fine-tuned network logged by tracking.Run.log_model loads back with
`mlflow.pytorch.load_model("runs:/<id>/model")` and predicts exactly what its checkpoint predicts, offline."""

from __future__ import annotations

import socket
import time

import torch

from tasks import tracking
from tasks.common import build_model, model_from_checkpoint, save_checkpoint

MODEL = {"encoder": "test_convnext", "decoder_channels": [4, 8, 8, 16, 16], "scales": [0, 1],
         "min_depth": 0.1, "max_depth": 10.0}


def test_logged_model_loads_back_and_predicts_like_the_checkpoint(tmp_path, mlflow_uri, monkeypatch, single_thread):
    torch.manual_seed(0)
    ckpt = tmp_path / "data" / "checkpoints" / "ft_x.pt"
    save_checkpoint(ckpt, build_model(MODEL), MODEL, step=3, data_hash="test")

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access while logging a model: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)  # e.g. requirement inference hitting PyPI
    run = tracking.Run(tmp_path, "finetune@x", tags={"kind": "stage"})
    start = time.perf_counter()
    run.log_model(model_from_checkpoint(ckpt)[0])
    print(f"log_model: {time.perf_counter() - start:.2f} s")
    run.end()
    monkeypatch.undo()

    import mlflow.pytorch

    loaded = mlflow.pytorch.load_model(f"runs:/{run.id}/model")
    reference = model_from_checkpoint(ckpt)[0].eval()
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        for got, want in zip(loaded(x), reference(x), strict=True):
            assert torch.equal(got, want)
    assert not loaded.training  # ready for inference as logged

    from mlflow.tracking import MlflowClient

    reqs = MlflowClient(mlflow_uri).download_artifacts(run.id, "model/requirements.txt", str(tmp_path))
    pinned = {line.split("==")[0] for line in open(reqs).read().split()}
    assert pinned == {"mlflow", "torch", "timm"}  # given explicitly, not inferred (mlflow adds itself)


def test_log_model_needs_no_active_run(tmp_path, mlflow_uri):
    """Stages log from Prefect worker threads with explicit run ids: nothing may land in MLflow's default run or
    experiment (left to itself, log_model would attach to the thread's active run and experiment 0)."""
    import mlflow

    run = tracking.Run(tmp_path, "finetune@y", tags={"kind": "stage"})
    run.log_model(build_model(MODEL))
    run.end()
    assert mlflow.active_run() is None
    logged = run.client.search_logged_models(experiment_ids=[run.experiment_id],
                                             filter_string=f"source_run_id = '{run.id}'")
    assert [m.name for m in logged] == ["model"]


def test_queued_experiment_copy_runs_here_but_records_in_the_parent(tmp_path, monkeypatch):
    """`dvc exp run --queue` runs stages in a temporary copy (the cwd) and sets DVC_ROOT to the parent project: the
    stage must use the copy's params and outputs, and keep its MLflow records in the parent, which outlives the copy."""
    from flows.cli._common import project_root

    parent = tmp_path / "parent"
    copy = parent / ".dvc" / "tmp" / "exps" / "tmpabc"
    for root in (parent, copy):
        root.mkdir(parents=True, exist_ok=True)
        (root / "params.yaml").write_text("tracking: {}\n")
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(parent))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert project_root() == copy.resolve()
    assert tracking.tracking_uri(copy) == f"sqlite:///{parent.resolve()}/mlflow.db"
    monkeypatch.delenv("DVC_ROOT")
    assert tracking.tracking_uri(copy) == f"sqlite:///{copy.resolve()}/mlflow.db"
