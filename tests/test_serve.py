"""`metadepth serve` (flows/serve.py): typed stage deployments, the pipeline form prefilled from params.yaml, run
names from stage arguments, and a UI run's form turned into the overrides of exactly the fields changed."""

from __future__ import annotations

import pytest
from tiny_project import ROOT

from flows.orchestration import stage_run_name
from flows.serve import deployments, params_to_overrides, stage_args
from tasks.params import Params, load_params, merged


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from prefect.settings import PREFECT_HOME, temporary_settings

    with temporary_settings(updates={PREFECT_HOME: str(tmp_path_factory.mktemp("prefect"))}):
        yield {d.flow_name: d for d in deployments(ROOT, 2)}


def changed(params: Params, **sections: dict) -> Params:
    """`params` with some fields changed, as the validated form gives them (the schema is frozen)."""
    return Params.model_validate(merged(params.model_dump(mode="json"), sections))


def schema(deployment) -> dict:
    return deployment._parameter_openapi_schema.model_dump()["properties"]


def test_run_names_come_from_the_stage_arguments():
    assert stage_run_name(("finetune", "meta", "0")) == "finetune-meta-seed0"
    assert stage_run_name(("meta_init", "meta_L8", "2")) == "meta_init-meta_L8-seed2"
    assert stage_run_name(("prepare", "loft")) == "prepare-loft"
    assert stage_run_name(("report",)) == "report"
    assert stage_args("finetune", {"start": "meta", "seed": 0}) == ("finetune", "meta", "0")


def test_stage_deployments_take_typed_parameters(served):
    params = load_params(ROOT / "params.yaml")
    finetune = schema(served["stage-finetune"])
    assert finetune["start"]["enum"] == params.finetune.starts and finetune["start"]["type"] == "string"
    assert finetune["seed"]["type"] == "integer" and finetune["seed"]["default"] == params.seeds[0]
    assert schema(served["stage-prepare"])["dataset"]["enum"] == params.domains
    assert "args" not in finetune and schema(served["stage-report"]) == {}
    description = served["stage-finetune"].description
    assert "params.yaml is not changed" in description and "dvc.lock is not updated" in description


def test_the_pipeline_form_is_prefilled_from_params_yaml(served):
    pipeline = served["pipeline"]
    assert set(schema(pipeline)) == {"params", "overrides", "commit"}
    assert pipeline.parameters == {"params": load_params(ROOT / "params.yaml").model_dump(mode="json")}
    assert "written into" in pipeline.description and "dvc.lock" in pipeline.description


def test_only_the_fields_changed_in_the_form_become_overrides():
    base = load_params(ROOT / "params.yaml")
    assert params_to_overrides(base, base) == []
    wanted = changed(base, finetune={"steps": 7}, domains=["loft", "studio"])
    assert params_to_overrides(base, wanted) == ['domains=["loft", "studio"]', "finetune.steps=7"]


def test_a_ui_run_leaves_untouched_fields_as_params_yaml_has_them_now(monkeypatch):
    """The form holds params.yaml as it was when serving started: a field the user did not touch must not revert an
    edit made to params.yaml since (only the fields changed in the form are written)."""
    import flows.pipeline
    from flows.serve import pipeline_flow

    got = []
    monkeypatch.setattr(flows.pipeline.pipeline, "fn", lambda root, overrides, commit: got.append(overrides))
    base = load_params(ROOT / "params.yaml")
    wanted = changed(base, meta={"settings": {"steps": 5}})
    ui = pipeline_flow(ROOT, base, 2)
    ui.fn(params=wanted, overrides=["evaluate.batch_size=2"])
    ui.fn(params=base)
    assert got == [["meta.settings.steps=5", "evaluate.batch_size=2"], None]


def test_served_entrypoints_import_back_as_the_same_flows(served, monkeypatch):
    """Prefect's runner starts each flow run in a fresh process that imports the deployment's entrypoint."""
    import json

    from prefect.utilities.importtools import import_object

    import flows.serve

    with pytest.raises(AttributeError):  # outside `metadepth serve`
        import_object("flows.serve.pipeline")
    monkeypatch.setenv(flows.serve.SERVE_ENV, json.dumps({"root": str(ROOT), "max_parallel": 2, "params": served[
        "pipeline"].parameters["params"]}))
    for deployment in served.values():
        flow = import_object(deployment.entrypoint)
        assert flow.name == deployment.flow_name
        assert flow.parameters.model_dump()["properties"] == schema(deployment)
    with pytest.raises(AttributeError):
        import_object("flows.serve.nothing_stage")
