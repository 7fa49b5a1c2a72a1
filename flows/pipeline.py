"""Prefect orchestration: one flow per stage (what dvc.yaml's commands run) and the `pipeline` flow over all.

The DAG is not written here: it is read from dvc.yaml (tasks/caching.py), so `dvc repro` and the Prefect pipeline
run the same stages with the same inputs. Every stage runs as the same cached Prefect task whichever way it was
started, so a stage computed by `dvc repro` is a cache hit for a later `metadepth run` and vice versa.
"""

from __future__ import annotations

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
    TRAINING_KINDS,
    StageProgress,
    make_task_runner,
    publish_report,
    retry_transient,
    training_slot,
)
from flows.stage_args import STAGE_ARGS, STAGE_KINDS, check_stage_args  # noqa: F401 - the last two: for importers
from tasks import tracking
from tasks.caching import StageSpec, cache_key, find_stage, load_stages, outputs_exist
from tasks.io import MetadepthError, project_lock
from tasks.params import Params, apply_overrides, load_params, params_hash, result_params, subset


def run_stage_body(params: Params, root: Path, args: tuple[str, ...], tracker: Any) -> dict[str, Any]:
    """Dispatch `metadepth stage KIND ARGS...` to the stage code in tasks/ (imported lazily: torch is slow)."""
    # Training and evaluate commands end with the seed (dvc.yaml's `${item.seed}`; checked by check_stage_args).
    kind, rest = args[0], args[1:]
    if kind == "prepare":
        from tasks.preprocess.prepare import prepare

        return prepare(params, rest[0], root)
    if kind == "init":
        from tasks.initialize import run_init

        return run_init(params, root, rest[0], seed=int(rest[-1]))
    if kind == "meta_init":
        from tasks.meta_init import run_meta_init

        return run_meta_init(params, root, rest[0], tracker, seed=int(rest[-1]))
    if kind == "finetune":
        from tasks.finetune import run_finetune

        return run_finetune(params, root, rest[0], tracker, seed=int(rest[-1]))
    if kind == "evaluate":
        from tasks.evaluate import run_evaluate

        result = run_evaluate(params, root, rest[0], rest[1], seed=int(rest[-1]))
        return {k: result[k] for k in ("model", "dataset", "seed", "metrics", "n_images", "n_valid_pixels")}
    if kind == "report":
        from tasks.report import run_report

        return run_report(params, root)
    raise MetadepthError(f"unknown stage {kind!r}; stages are {', '.join(STAGE_KINDS)}")


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
    rootp = Path(root)
    params = load_params(rootp / "params.yaml")
    spec = find_stage(rootp, tuple(args))
    values = subset(params, list(spec.params))
    run = tracking.Run(rootp, spec.name, params=values, parent_id=parent_run_id,
                       tags={"kind": "stage", "stage": spec.name, "cache": "miss", "params_hash": params_hash(values)})
    training = spec.kind in TRAINING_KINDS
    tracker = StageProgress(run, spec.name) if training else run
    try:
        with training_slot() if training else nullcontext():
            result = run_stage_body(params, rootp, tuple(args), tracker)
        if training:
            tracker.finish()
        run.log_metrics(_numbers(result, "final."), step=0)
        if spec.kind == "report":
            run.log_artifact(rootp / "reports")
        if spec.kind in ("finetune", "meta_init", "init"):
            run.log_artifact(rootp / result["checkpoint"], "checkpoints")
        if spec.kind == "finetune":  # the deliverable models: loadable with mlflow.pytorch.load_model (README)
            from tasks.common import model_from_checkpoint

            run.log_model(model_from_checkpoint(rootp / result["checkpoint"])[0])
    except BaseException:
        run.end("FAILED")
        raise
    run.end()
    return {"stage": spec.name, "result": result}


def _submit(spec: StageSpec, root: Path, parent: str | None, wait_for: list[Any]) -> Any:
    # A cache record whose outputs are gone on disk is a miss: refresh it instead of trusting it.
    opts = {"task_run_name": spec.name, "refresh_cache": not outputs_exist(root, spec)}
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
        out = _submit(spec, rootp, os.environ.get(tracking.PARENT_ENV), []).result()
        if spec.kind == "report":
            publish_report(rootp, out["result"])
        return out

    # A module-level name of its own, so a served deployment can import it back (entrypoint flows.pipeline:<name>).
    stage_flow.__name__ = stage_flow.__qualname__ = f"{kind}_flow"
    globals()[stage_flow.__name__] = flow(name=f"stage-{kind}", log_prints=True)(stage_flow)
    return globals()[stage_flow.__name__]


STAGE_FLOWS = {kind: _stage_flow(kind) for kind in STAGE_KINDS}


def dvc_commit(root: Path) -> None:
    """Record the pipeline's outputs in dvc.lock so `dvc status` agrees with what Prefect just computed."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        repo.commit(None, force=True)
        for stage in repo.index.stages:  # commit() alone leaves cached outputs out of .gitignore; repro does not
            stage.ignore_outs()


def params_to_overrides(root: Path, wanted: Params) -> list[str]:
    """The `-S` overrides that turn params.yaml into `wanted` (a full params object from the Prefect UI form)."""
    current = tracking.flatten(load_params(root / "params.yaml").model_dump(mode="json"))
    target = tracking.flatten(wanted.model_dump(mode="json"))
    return [f"{k}={json.dumps(v)}" for k, v in target.items() if current.get(k) != v]


@flow(name="pipeline", log_prints=True, task_runner=make_task_runner("thread", DEFAULT_MAX_PARALLEL))
def pipeline(root: str = ".", overrides: list[str] | None = None, params: Params | None = None,
             commit: bool = True) -> dict[str, Any]:
    """The whole DAG of dvc.yaml as one flow run: a cached task per stage, fan-outs in parallel.

    `params` (the validated schema, a form in the Prefect UI) and `overrides` (`key=value`) are written into
    params.yaml first, as `dvc exp run -S` does, so DVC and Prefect keep seeing the same values. Stage tasks run
    DEFAULT_MAX_PARALLEL at a time unless the caller gives another task runner (`run_pipeline`, `serve`).
    """
    rootp = Path(root)
    with project_lock(rootp, "metadepth run"):
        return _pipeline(rootp, overrides, params, commit)


def _pipeline(rootp: Path, overrides: list[str] | None, params: Params | None, commit: bool) -> dict[str, Any]:
    overrides = (params_to_overrides(rootp, params) if params else []) + list(overrides or [])
    params = apply_overrides(rootp / "params.yaml", overrides) if overrides else load_params(rootp / "params.yaml")
    stages = topological(load_stages(rootp))
    all_params = result_params(params)
    parent = tracking.Run(rootp, "pipeline", params=all_params,
                          tags={"kind": "pipeline", "params_hash": params_hash(all_params)})
    futures: dict[str, Any] = {}
    try:
        for spec in stages:
            futures[spec.name] = _submit(spec, rootp, parent.id, [futures[u.name] for u in spec.upstream(stages)])
        results = {name: f.result() for name, f in futures.items()}
        cached = [name for name, f in futures.items() if f.state.name == "Cached"]
        for name in cached:  # a cache hit ran no code, but the pipeline run should still show every stage
            child = tracking.Run(rootp, name, parent_id=parent.id, tags={"kind": "stage", "stage": name,
                                                                         "cache": "hit"})
            child.log_metrics(_numbers(results[name]["result"], "final."), step=0)
            child.end()
        tracking.log_report(parent, rootp)
        for spec in stages:
            if spec.kind == "report":
                publish_report(rootp, results[spec.name]["result"])
        parent.set_tags({"cached_stages": str(len(cached)), "stages": str(len(stages))})
    except BaseException:
        parent.end("FAILED")
        raise
    parent.end()
    if commit:
        dvc_commit(rootp)
    return {"cached": cached, "ran": [n for n in futures if n not in cached], "mlflow_run": parent.id,
            "table": results.get("report", {}).get("result", {}).get("table", "")}


def serve(root: Path, max_parallel: int, limit: int | None = None) -> None:
    """Serve the pipeline and the per-stage flows so runs can be started (with parameters) from the Prefect UI."""
    from prefect import serve as prefect_serve
    from prefect.types.entrypoint import EntrypointType

    runner = make_task_runner("thread", max_parallel)
    deployments = [pipeline.with_options(task_runner=runner).to_deployment(
        name="metadepth", parameters={"root": str(root)}, entrypoint_type=EntrypointType.MODULE_PATH,
        description="The whole DAG of dvc.yaml; edit params in the form or give key=value overrides.")]
    deployments += [f.to_deployment(name="metadepth", parameters={"root": str(root)},
                                    entrypoint_type=EntrypointType.MODULE_PATH) for f in STAGE_FLOWS.values()]
    prefect_serve(*deployments, limit=limit)


def run_pipeline(root: Path, overrides: list[str], max_parallel: int = DEFAULT_MAX_PARALLEL,
                 task_runner: str = "thread", dask_address: str | None = None, commit: bool = True) -> dict[str, Any]:
    """`metadepth run`: the pipeline flow on a thread pool of `max_parallel`, or on Dask (see make_task_runner)."""
    runner = make_task_runner(task_runner, max_parallel, dask_address)
    return pipeline.with_options(task_runner=runner)(str(root), overrides or None, commit=commit)
