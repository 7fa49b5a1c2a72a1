"""MLflow records fit for comparison: a fine-tuned network logged by tracking.Run.log_model (named after its run, with
a signature and an input example) loads back with `mlflow.pytorch.load_model("runs:/<id>/<name>")` and predicts
exactly what its checkpoint predicts, offline; runs carry model/dataset/seed/init and MLflow's source tags; one
nested run per evaluation record; runs left open by a stopped process are closed as KILLED."""

from __future__ import annotations

import socket
import time

import torch
from tiny_project import ROOT

from tasks import tracking
from tasks.checkpoints import build_model, model_from_checkpoint, save_checkpoint

MODEL = {"encoder": "test_convnext", "decoder_channels": [4, 8, 8, 16, 16], "scales": [0, 1],
         "min_depth": 0.1, "max_depth": 10.0}


def test_logged_model_loads_back_and_predicts_like_the_checkpoint(tmp_path, mlflow_uri, monkeypatch, single_thread):
    torch.manual_seed(0)
    ckpt = tmp_path / "data" / "checkpoints" / "ft_x.pt"
    save_checkpoint(ckpt, build_model(MODEL), MODEL, step=3, data_hash="test")

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access while logging a model: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)  # e.g. requirement inference hitting PyPI
    run = tracking.Run(tmp_path, "finetune@x-0", tags={"kind": "stage"})
    start = time.perf_counter()
    run.log_model(model_from_checkpoint(ckpt)[0], registered_name="metadepth-test-ft_x")
    print(f"log_model: {time.perf_counter() - start:.2f} s")
    run.end()
    monkeypatch.undo()

    import mlflow.pytorch
    from mlflow.models import get_model_info

    loaded = mlflow.pytorch.load_model(f"runs:/{run.id}/finetune-x-0")  # named after the run
    reference = model_from_checkpoint(ckpt)[0].eval()
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        for got, want in zip(loaded(x), reference(x), strict=True):
            assert torch.equal(got, want)
    assert not loaded.training  # ready for inference as logged

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    reqs = client.download_artifacts(run.id, "finetune-x-0/requirements.txt", str(tmp_path))
    pinned = {line.split("==")[0] for line in open(reqs).read().split()}
    assert pinned == {"mlflow", "torch", "timm"}  # given explicitly, not inferred (mlflow adds itself)

    info = get_model_info(f"runs:/{run.id}/finetune-x-0")
    [rgb], [depth] = info.signature.inputs.inputs, info.signature.outputs.inputs
    assert rgb.shape == (-1, 3, 32, 32) and str(rgb.type) == "float32"
    assert depth.shape == (-1, 1, 32, 32)  # the full-resolution depth map
    assert info.saved_input_example_info is not None
    [version] = client.search_model_versions("name = 'metadepth-test-ft_x'")
    assert version.run_id == run.id  # registered in the tracking store's own registry


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
    assert [m.name for m in logged] == ["finetune-y"]


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


def test_runs_carry_their_identity_and_mlflow_source_tags(mlflow_uri):
    """model/dataset/seed/start as tags (filters, grouping) and params (charts); MLflow's own source fields filled."""
    from mlflow.tracking import MlflowClient

    who = tracking.identity({"START": "meta", "SEED": "0"}, dataset="loft")
    assert who == {"start": "meta", "model": "ft_meta", "seed": "0", "dataset": "loft"}
    assert tracking.identity({"VARIANT": "meta_L8", "SEED": "1"}) == {"model": "meta_L8", "seed": "1"}
    assert tracking.identity({"DATASET": "studio"}) == {"dataset": "studio"}
    run = tracking.Run(ROOT, "finetune@meta-0", params={"model": {"encoder": "x"}}, identity=who,
                       tags={"kind": "stage"})
    run.end()
    data = MlflowClient(mlflow_uri).get_run(run.id).data
    assert {k: data.tags[k] for k in who} == who and {k: data.params[k] for k in who} == who
    assert data.params["model.encoder"] == "x"  # the params section `model` and the identity `model` both kept
    assert data.tags["mlflow.source.type"] == "LOCAL" and data.tags["mlflow.source.name"]
    assert data.tags["mlflow.source.git.commit"] == tracking.git_commit(ROOT) != "none"


def test_one_nested_run_per_evaluation_record(mlflow_uri):
    from mlflow.tracking import MlflowClient

    def record(model, dataset, seed, rmse):
        protocol = {"metrics": {"rmse": rmse, "abs_rel": 0.1}, "n_valid_pixels": 100, "per_image_rmse": [rmse],
                    "protocol": {"align": "none", "split": "test"}}
        return {"schema_version": 2, "model": model, "dataset": dataset, "seed": seed, "checkpoint_step": 3,
                "n_images": 4, "protocols": {"metric": protocol, "median": {**protocol, "metrics": {"rmse": rmse / 2}}}}

    parent = tracking.Run(ROOT, "evaluate", tags={"kind": "stage"})
    records = [record("ft_meta", "studio", 0, 1.5), record("ft_scratch", "loft", 1, 2.0)]
    start = time.perf_counter()
    ids = tracking.log_evaluations(ROOT, parent.id, records)
    print(f"log_evaluations: {time.perf_counter() - start:.2f} s for {len(records)} records")
    parent.end()
    client = MlflowClient(mlflow_uri)
    first, second = (client.get_run(i) for i in ids)
    assert first.data.tags["mlflow.parentRunId"] == parent.id and first.info.status == "FINISHED"
    for key, want in {"model": "ft_meta", "dataset": "studio", "seed": "0", "start": "meta"}.items():
        assert first.data.tags[key] == want and first.data.params[key] == want
    assert first.data.metrics == {"metric.rmse": 1.5, "metric.abs_rel": 0.1, "metric.n_valid_pixels": 100,
                                  "median.rmse": 0.75, "median.n_valid_pixels": 100}
    assert first.data.params["metric.align"] == "none" and second.data.tags["model"] == "ft_scratch"
    found = client.search_runs([first.info.experiment_id], "tags.model = 'ft_scratch' and tags.dataset = 'loft' "
                               f"and tags.kind = 'evaluation' and tags.mlflow.parentRunId = '{parent.id}'")
    assert [r.info.run_id for r in found] == [ids[1]]


def test_runs_left_open_by_a_stopped_process_are_closed_as_killed(mlflow_uri):
    from mlflow.tracking import MlflowClient

    assert tracking.end_status(ValueError("bad")) == "FAILED"
    assert tracking.end_status(KeyboardInterrupt()) == "KILLED" and tracking.end_status(SystemExit(143)) == "KILLED"
    done, open_ = tracking.Run(ROOT, "done"), tracking.Run(ROOT, "open")
    done.end()
    open_.log_metrics({"loss": 1.0}, step=0)  # buffered: flushed on closing
    assert tracking.close_open_runs("KILLED", {"stopped_by": "SIGTERM"}) == 1
    client = MlflowClient(mlflow_uri)
    assert client.get_run(done.id).info.status == "FINISHED"
    killed = client.get_run(open_.id)
    assert killed.info.status == "KILLED" and killed.data.tags["stopped_by"] == "SIGTERM"
    assert killed.data.metrics == {"loss": 1.0}
    assert tracking.close_open_runs() == 0
