"""Prefect orchestration: one flow per stage (what dvc.yaml's commands run) and the `pipeline` flow over all.

The DAG is not written here: it is read from dvc.yaml (tasks/caching.py), so `dvc repro` and the Prefect pipeline
run the same stages with the same inputs. Every stage runs as the same cached Prefect task whichever way it was
started, so a stage computed by `dvc repro` is a cache hit for a later `metadepth run` and vice versa.
"""

from __future__ import annotations

import dataclasses
import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.orchestration import (
    DEFAULT_MAX_PARALLEL,
    RETRY_DELAYS,
    STAGE_RETRIES,
    StageProgress,
    make_task_runner,
    pipeline_flow_run_name,
    publish_report,
    retry_transient,
    stage_arguments,
    stage_flow_run_name,
    training_slot,
)
from flows.stopping import stop_on_signals
from tasks import tracking
from tasks.caching import StageSpec, cache_key, find_stage, load_stages, outputs_exist
from tasks.io import MetadepthError, project_lock
from tasks.param_values import apply_overrides, params_hash, result_params, subset
from tasks.params import Params, load_params
from tasks.stages import STAGES


def as_record(result: Any) -> dict[str, Any]:
    """A stage result as plain JSON data (what the cached Prefect task stores)."""
    return dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(result)


def _stage_key(context: Any, parameters: dict[str, Any]) -> str:
    root = Path(parameters["root"])
    return cache_key(root, find_stage(root, tuple(parameters["args"])), load_params(root / "params.yaml"))


def _numbers(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    return {k: float(v) for k, v in tracking.flatten(d, prefix).items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


@task(cache_key_fn=_stage_key, persist_result=True, result_serializer="json", retries=STAGE_RETRIES,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_transient)
def stage_task(args: tuple[str, ...], root: str, parent_run_id: str | None = None) -> dict[str, Any]:
    """One DVC stage as a cached Prefect task, recorded as one MLflow run (nested under the pipeline's).

    Transient failures (a locked SQLite database, a server not ready) are retried; a training stage resumes from
    its resume snapshot. Training stages hold the `metadepth-train` concurrency slot and show a progress artifact.
    """
    from tasks.dispatch import run_stage  # torch and the stage code: only when a stage really runs
    from tasks.runtime import trains_on_gpu

    rootp = Path(root)
    params = load_params(rootp / "params.yaml")
    spec = find_stage(rootp, tuple(args))
    stage = STAGES[spec.kind]
    values = subset(params, list(spec.params))
    named = stage_arguments(args)
    trained = stage.output.format(*[v for k, v in named.items() if k != "SEED"]) if stage.output else None
    who = tracking.identity(named, model=trained, dataset=params.train_domain if stage.trains else None)
    run = tracking.Run(rootp, spec.name, params=values, parent_id=parent_run_id, identity=who,
                       tags={"kind": "stage", "stage": spec.name, "cache": "miss", "params_hash": params_hash(values)})
    tracker = StageProgress(run, spec.name) if stage.trains else run
    try:
        # One training at a time per GPU; on the CPU they share the cores (run_pipeline) instead.
        with training_slot() if stage.trains and trains_on_gpu(params.runtime) else nullcontext():
            result = as_record(run_stage(params, rootp, tuple(args), tracker))
        if stage.trains:
            tracker.finish()
        run.log_metrics(_numbers(result, "final."), step=0)
        if stage.report:
            run.log_artifact(rootp / "reports")
        if stage.evaluations:
            tracking.log_evaluations(rootp, run.id, [json.loads((rootp / f).read_text()) for f in result["files"]])
        if stage.checkpoint_artifact:
            run.log_artifact(rootp / result["checkpoint"], "checkpoints")
        if stage.logged_model:  # the deliverable models: loadable with mlflow.pytorch.load_model (docs/tracking.md)
            from tasks.checkpoints import model_from_checkpoint

            model = model_from_checkpoint(rootp / result["checkpoint"])[0]
            run.log_model(model, registered_name=f"metadepth-{who['model']}")
    except BaseException as exc:
        run.end(tracking.end_status(exc))
        raise
    run.end()
    return {"stage": spec.name, "result": result}


def _submit(spec: StageSpec, root: Path, params: Params, parent: str | None, wait_for: list[Any]) -> Any:
    # A cache record whose outputs are gone on disk is a miss: refresh it instead of trusting it.
    present = outputs_exist(root, spec) and STAGES[spec.kind].outputs_complete(params, root)
    opts = {"task_run_name": spec.name, "refresh_cache": not present}
    return stage_task.with_options(**opts).submit(spec.args, str(root), parent, wait_for=wait_for)


def topological(stages: list[StageSpec]) -> list[StageSpec]:
    done: list[StageSpec] = []
    pending = list(stages)
    while pending:
        ready = [s for s in pending if all(u in done for u in s.upstream(stages))]
        if not ready:
            raise MetadepthError(f"dvc.yaml has a dependency cycle among {[s.name for s in pending]}")
        done += ready
        pending = [s for s in pending if s not in ready]
    return done


def _stage_flow(kind: str):
    def stage_flow(args: list[str], root: str = ".") -> dict[str, Any]:
        """Run one stage (as `dvc repro` does, through `metadepth stage`)."""
        rootp = Path(root)
        spec = find_stage(rootp, tuple(args))
        with stop_on_signals():
            out = _submit(spec, rootp, load_params(rootp / "params.yaml"), os.environ.get(tracking.PARENT_ENV),
                          []).result()
        if STAGES[spec.kind].report:
            publish_report(rootp, out["result"])
        return out

    # A module-level name of its own, so a served deployment can import it back (entrypoint flows.pipeline:<name>).
    stage_flow.__name__ = stage_flow.__qualname__ = f"{kind}_flow"
    globals()[stage_flow.__name__] = flow(name=f"stage-{kind}", log_prints=True,
                                          flow_run_name=stage_flow_run_name)(stage_flow)
    return globals()[stage_flow.__name__]


STAGE_FLOWS = {kind: _stage_flow(kind) for kind in STAGES}


def dvc_commit(root: Path) -> None:
    """Record the pipeline's outputs in dvc.lock so `dvc status` agrees with what Prefect just computed."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        repo.commit(None, force=True)
        for stage in repo.index.stages:  # commit() alone leaves cached outputs out of .gitignore; repro does not
            stage.ignore_outs()


@flow(name="pipeline", log_prints=True, task_runner=make_task_runner("thread", DEFAULT_MAX_PARALLEL),
      flow_run_name=pipeline_flow_run_name)
def pipeline(root: str = ".", overrides: list[str] | None = None, commit: bool = True) -> dict[str, Any]:
    """The whole DAG of dvc.yaml as one flow run: a cached task per stage, fan-outs in parallel.

    `overrides` (`key=value`) are written into params.yaml first, as `dvc exp run -S` does, so DVC and Prefect keep
    seeing the same values (the Prefect UI's form becomes overrides: flows/serve.py). Stage tasks run
    DEFAULT_MAX_PARALLEL at a time unless the caller gives another task runner (`run_pipeline`, `serve`).
    """
    rootp = Path(root)
    with project_lock(rootp, "metadepth run"), stop_on_signals():
        return _pipeline(rootp, overrides, commit)


def _pipeline(rootp: Path, overrides: list[str] | None, commit: bool) -> dict[str, Any]:
    params = apply_overrides(rootp / "params.yaml", overrides) if overrides else load_params(rootp / "params.yaml")
    stages = topological(load_stages(rootp))
    all_params = result_params(params)
    parent = tracking.Run(rootp, "pipeline", params=all_params,
                          tags={"kind": "pipeline", "params_hash": params_hash(all_params)})
    futures: dict[str, Any] = {}
    try:
        for spec in stages:
            futures[spec.name] = _submit(spec, rootp, params, parent.id,
                                         [futures[u.name] for u in spec.upstream(stages)])
        results = {name: f.result() for name, f in futures.items()}
        cached = [name for name, f in futures.items() if f.state.name == "Cached"]
        for name in cached:  # a cache hit ran no code, but the pipeline run should still show every stage
            child = tracking.Run(rootp, name, parent_id=parent.id, tags={"kind": "stage", "stage": name,
                                                                         "cache": "hit"})
            child.log_metrics(_numbers(results[name]["result"], "final."), step=0)
            child.end()
        tracking.log_report(parent, rootp)
        for spec in stages:
            if STAGES[spec.kind].report:
                publish_report(rootp, results[spec.name]["result"])
        parent.set_tags({"cached_stages": str(len(cached)), "stages": str(len(stages))})
    except BaseException as exc:
        parent.end(tracking.end_status(exc))
        raise
    parent.end()
    if commit:
        dvc_commit(rootp)
    return {"cached": cached, "ran": [n for n in futures if n not in cached], "mlflow_run": parent.id,
            "table": results.get("report", {}).get("result", {}).get("table", "")}


def run_pipeline(root: Path, overrides: list[str], max_parallel: int = DEFAULT_MAX_PARALLEL,
                 task_runner: str = "thread", dask_address: str | None = None, commit: bool = True) -> dict[str, Any]:
    """`metadepth run`: the pipeline flow on a thread pool of `max_parallel`, or on Dask (see make_task_runner)."""
    from tasks.runtime import share_cpu, trains_on_gpu

    runtime = load_params(Path(root) / "params.yaml").runtime
    if task_runner == "thread" and not trains_on_gpu(runtime):
        threads = share_cpu(runtime, max_parallel)
        print(f"CPU: up to {max_parallel} stages side by side, {threads} torch thread(s) each", flush=True)
    runner = make_task_runner(task_runner, max_parallel, dask_address)
    return pipeline.with_options(task_runner=runner)(str(root), overrides or None, commit=commit)
