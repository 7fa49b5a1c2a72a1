"""`metadepth serve`: the pipeline and one flow per stage kind as Prefect deployments, started from the Prefect UI.

Each deployment's form is typed: the pipeline takes the validated params schema, prefilled with params.yaml as it is
when serving starts; a stage takes its own arguments (e.g. finetune: start, seed) with the allowed values from
params.yaml. A UI-started run works on this checkout, like a command typed in it: what it changes there is said in
each deployment's description (and docs/orchestration.md).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from pathlib import Path
from typing import Any, Literal

from flows.orchestration import make_task_runner, pipeline_run_name, stage_run_name
from tasks import tracking
from tasks.params import Params, load_params
from tasks.stages import arg_table

SERVE_ENV = "METADEPTH_SERVE"  # root, max_parallel and the params of serving time, for the flow-run processes
PIPELINE_DESCRIPTION = (
    "Runs the whole DAG of dvc.yaml in {root}, like `metadepth run`. The form starts from params.yaml as it was when "
    "`metadepth serve` started; each field you change there is written into {root}/params.yaml before the run "
    "(like `dvc exp run -S key=value`; untouched fields leave the file as it is now), as are the `overrides` "
    "(key=value). The stages write their outputs (data/, reports/) into the checkout, and with commit=true dvc.lock "
    "is updated after a successful run. Undo the parameter change with `git checkout params.yaml`.")
STAGE_DESCRIPTION = (
    "Runs `metadepth stage {kind} {names}` in {root}: writes that stage's outputs (its `outs` in dvc.yaml) into the "
    "checkout. params.yaml is not changed and dvc.lock is not updated: `dvc status` shows the stage as changed "
    "until `dvc commit` (or `metadepth run`) records it.")


def params_to_overrides(base: Params, wanted: Params) -> list[str]:
    """The `-S` overrides that turn `base` into `wanted` (the Prefect UI form): only the fields that differ."""
    current = tracking.flatten(base.model_dump(mode="json"))
    target = tracking.flatten(wanted.model_dump(mode="json"))
    return [f"{k}={json.dumps(v)}" for k, v in target.items() if current.get(k) != v]


def stage_parameters(kind: str, params: Params) -> list[inspect.Parameter]:
    """The typed parameters of stage `kind`'s deployment: one per stage argument, lower-cased (START -> start),
    choosing among the values params.yaml allows (a dropdown in the UI); SEED is an int. Defaults: the first."""
    values = params.model_dump(mode="json")
    out = []
    for name, key in arg_table()[kind]:
        choices = list(functools.reduce(lambda node, k: node[k], key.split("."), values))
        annotation: Any = int if name == "SEED" else Literal[tuple(str(c) for c in choices)]
        default = int(choices[0]) if name == "SEED" else str(choices[0])
        out.append(inspect.Parameter(name.lower(), inspect.Parameter.KEYWORD_ONLY, default=default,
                                     annotation=annotation))
    return out


def stage_args(kind: str, values: dict[str, Any]) -> tuple[str, ...]:
    """The `metadepth stage` arguments from a typed deployment's parameters: {"start": "meta", "seed": 0} ->
    ("finetune", "meta", "0")."""
    return (kind, *(str(values[name.lower()]) for name, _ in arg_table()[kind]))


def _typed_run_name(kind: str) -> str:
    from prefect.runtime import flow_run

    return stage_run_name(stage_args(kind, flow_run.parameters))


def typed_stage_flow(kind: str, root: Path, params: Params) -> Any:
    """Stage `kind` as a flow with typed parameters (named `stage-<kind>`, like the flow `metadepth stage` runs)."""
    from prefect import flow

    from flows.pipeline import STAGE_FLOWS
    from flows.stage_args import check_stage_args

    def run_stage(**values: Any) -> dict[str, Any]:
        args = stage_args(kind, values)
        check_stage_args(root, args)  # params.yaml may have changed since serving started
        return STAGE_FLOWS[kind].fn(list(args), str(root))

    run_stage.__signature__ = inspect.Signature(stage_parameters(kind, params))  # type: ignore[attr-defined]
    run_stage.__name__ = run_stage.__qualname__ = f"{kind}_stage"
    run_stage.__doc__ = f"Run the {kind} stage with these arguments."
    return flow(name=f"stage-{kind}", log_prints=True, flow_run_name=functools.partial(_typed_run_name, kind))(
        run_stage)


def _pipeline_run_name(base: Params) -> str:
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    wanted = parameters.get("params")
    changed = params_to_overrides(base, Params.model_validate(wanted)) if wanted else []
    return pipeline_run_name([*changed, *(parameters.get("overrides") or [])])


def pipeline_flow(root: Path, base: Params, max_parallel: int) -> Any:
    """The pipeline with the params schema as its form; the fields changed from `base` become overrides."""
    from prefect import flow

    from flows.pipeline import pipeline as pipeline_flow_

    def pipeline(params: Params | None = None, overrides: list[str] | None = None,
                 commit: bool = True) -> dict[str, Any]:
        """The whole DAG of dvc.yaml; edit params in the form or give key=value overrides."""
        changed = (params_to_overrides(base, params) if params else []) + list(overrides or [])
        return pipeline_flow_.fn(str(root), changed or None, commit)

    return flow(name="pipeline", log_prints=True, task_runner=make_task_runner("thread", max_parallel),
                flow_run_name=functools.partial(_pipeline_run_name, base))(pipeline)


def deployments(root: Path, max_parallel: int) -> list[Any]:
    """The pipeline deployment (form prefilled from params.yaml) and one typed deployment per stage kind."""
    from prefect.types.entrypoint import EntrypointType

    base = load_params(root / "params.yaml")
    opts = {"name": "metadepth", "entrypoint_type": EntrypointType.MODULE_PATH}
    out = [pipeline_flow(root, base, max_parallel).to_deployment(
        parameters={"params": base.model_dump(mode="json")}, description=PIPELINE_DESCRIPTION.format(root=root),
        **opts)]
    for kind, names in arg_table().items():
        description = STAGE_DESCRIPTION.format(kind=kind, names=" ".join(n for n, _ in names), root=root)
        out.append(typed_stage_flow(kind, root, base).to_deployment(description=description, **opts))
    return out


def __getattr__(name: str) -> Any:
    """The served flows by their entrypoint (`flows.serve.pipeline`, `flows.serve.finetune_stage`, ...): Prefect's
    runner imports them in each flow run's own process, where they are rebuilt from what `serve` put in SERVE_ENV
    (the same root, parallelism and serving-time params, so the form and the flow agree)."""
    served = json.loads(os.environ.get(SERVE_ENV, "null"))
    kind = name.removesuffix("_stage")
    if served is None or not (name == "pipeline" or (name != kind and kind in arg_table())):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    root, base = Path(served["root"]), Params.model_validate(served["params"])
    return pipeline_flow(root, base, served["max_parallel"]) if name == "pipeline" else typed_stage_flow(kind, root,
                                                                                                          base)


def serve(root: Path, max_parallel: int, limit: int | None = None) -> None:
    """Serve the deployments so runs can be started (with parameters) from the Prefect UI, until Ctrl-C."""
    from prefect import serve as prefect_serve

    served = deployments(root, max_parallel)
    os.environ[SERVE_ENV] = json.dumps({"root": str(root), "max_parallel": max_parallel,
                                        "params": served[0].parameters["params"]})
    prefect_serve(*served, limit=limit)
