"""params.yaml's `tracking` section end to end on the tiny project: `metadepth run --push` pushes the outputs to
the configured DVC remote, runs go to the configured MLflow store, and the fine-tuned model logged there loads back
and predicts what its checkpoint predicts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from tiny_project import tiny_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tiny_repo, prefect_api) -> Path:
    root = tiny_repo("tracking")
    sh(root, "dvc", "remote", "add", "backup", str(root.parent / "remote"))  # not the default remote
    tiny_params(root / "params.yaml", tracking={"mlflow_uri": "sqlite:///runs/other.db", "experiment": "tiny",
                                                "dvc_remote": "backup"})
    return root


def sh(root: Path, *cmd: str, ok: bool = True) -> subprocess.CompletedProcess:
    # PYTHONPATH: the stage processes must run the copied code. No MLFLOW_TRACKING_URI: params.yaml decides.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONPATH": str(root)}
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    if ok:
        assert r.returncode == 0, f"{cmd} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_unknown_remote_fails_before_running(tiny):
    tiny_params(tiny / "params.yaml", tracking={"dvc_remote": "nope"})
    r = sh(tiny, "metadepth", "run", "--push", ok=False)
    tiny_params(tiny / "params.yaml", tracking={"dvc_remote": "backup"})
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "tracking.dvc_remote" in r.stderr and "'nope'" in r.stderr and "backup" in r.stderr
    assert not (tiny / "data" / "prepared").exists()  # nothing ran


def test_run_pushes_outputs_to_the_remote(tiny):
    r = sh(tiny, "metadepth", "run", "--push")
    assert "dvc push -r backup:" in r.stdout
    assert list((tiny.parent / "remote").rglob("*")), "nothing pushed"
    # every output in dvc.lock is on the remote: the remote's status lists nothing missing
    assert json.loads(sh(tiny, "dvc", "status", "--cloud", "--remote", "backup", "--json").stdout or "{}") == {}


def test_runs_go_to_the_configured_mlflow_store(tiny):
    from mlflow.tracking import MlflowClient

    assert (tiny / "runs" / "other.db").is_file() and not (tiny / "mlflow.db").exists()
    client = MlflowClient(f"sqlite:///{tiny / 'runs' / 'other.db'}")
    exp = client.get_experiment_by_name("tiny")
    assert client.search_runs([exp.experiment_id], "tags.kind = 'pipeline'")
    assert not any(k.startswith("tracking.") for r in client.search_runs([exp.experiment_id]) for k in r.data.params)


def test_finetuned_model_loads_back_like_its_checkpoint(tiny, tmp_path):
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient

    from tasks.checkpoints import model_from_checkpoint

    uri = f"sqlite:///{tiny / 'runs' / 'other.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'finetune@meta-0' and tags.cache = 'miss'")
    assert len(runs) == 1
    run_id = runs[0].info.run_id
    [ckpt] = client.list_artifacts(run_id, "checkpoints")  # the checkpoint artifact is still logged
    reference = model_from_checkpoint(Path(client.download_artifacts(run_id, ckpt.path, str(tmp_path))))[0].eval()
    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.pytorch.load_model(f"runs:/{run_id}/finetune-meta-0")  # named after its run
    finally:
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI"))
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        for got, want in zip(loaded(x), reference(x), strict=True):
            assert torch.equal(got, want)
    stages = client.search_runs([exp.experiment_id], "tags.kind = 'stage' and tags.cache = 'miss'")
    with_model = {r.data.tags["stage"] for r in stages if client.search_logged_models(
        experiment_ids=[exp.experiment_id], filter_string=f"source_run_id = '{r.info.run_id}'")}
    assert with_model == {"finetune@scratch-0", "finetune@meta-0", "finetune@sup-0"}  # finetune stages only
