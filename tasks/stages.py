"""The one list of pipeline stages: what each runs, its command-line arguments, and what the orchestration does
around it. dvc.yaml names the same kinds; `metadepth stage KIND ARGS...` resolves them here.

No Prefect and no torch at import time: the CLI reads this table to check arguments and print help instantly, and
a stage's code is imported only when it runs (by its "module:function" target, as timm's registry does).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Arg:
    """One positional argument of `metadepth stage KIND ...`; its valid values are the params list `choices`."""

    name: str
    choices: str  # dotted params key listing the values, e.g. "finetune.starts"


SEED = Arg("SEED", "seeds")  # training and evaluate stages end with the training seed


@dataclass(frozen=True)
class Stage:
    kind: str
    target: str  # "module:function", called as function(params, root, *args, [tracker=...,] [seed=...])
    args: tuple[Arg, ...] = ()
    # The params sections it reads: dvc.yaml's `params:` for the stage (plus a variant's own overrides), its Prefect
    # cache key, the MLflow params of its run and, for a training stage, its resume key.
    params: tuple[str, ...] = ()
    trains: bool = False  # holds the accelerator: the training slot, torchrun when nproc_per_node > 1, progress
    output: str | None = None  # the checkpoint and curve a training stage writes, "{0}" = its first argument
    metric_names: dict[str, str] = field(default_factory=dict)  # curve column -> tracker metric
    checkpoint_artifact: bool = False  # the result's checkpoint is logged with the stage's MLflow run
    logged_model: bool = False  # ... and as an MLflow model (the deliverables)
    report: bool = False  # the stage writes reports/: logged as artifacts and published to Prefect
    evaluations: bool = False  # the result's metrics files become one nested MLflow run each
    # "module:function" of (params, root) -> the files inside the stage's output folders that must all exist for a
    # cached result to be trusted (a folder out alone would still "exist" with one file deleted)
    expected_files: str | None = None

    @property
    def seeded(self) -> bool:
        return bool(self.args) and self.args[-1] is SEED

    def function(self) -> Callable[..., Any]:
        return _resolve(self.target)

    def outputs_complete(self, params: Any, root: Any) -> bool:
        """Every expected file is there (always true for a stage whose outs are its files)."""
        return self.expected_files is None or all(p.exists() for p in _resolve(self.expected_files)(params, root))

    def call_args(self, values: tuple[str, ...]) -> tuple[list[str], dict[str, Any]]:
        """(positional names, keywords) for the stage function from the command-line values."""
        if self.seeded:
            return list(values[:-1]), {"seed": int(values[-1])}
        return list(values), {}


def _resolve(target: str) -> Callable[..., Any]:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


_SUPERVISED_LOGS = {"loss": "train_loss", "lr": "lr", "grad_norm": "grad_norm", "val_loss": "val_loss"}
_META_LOGS = {c: f"meta_{c}" for c in ("loss_first", "loss_last", "loss_task_augment", "update_norm", "grad_norm",
                                       "val_loss")}

_TRAINING = ("train_domain", "loss", "augment")  # what every training stage reads besides its own section
_META_BUDGET = tuple(f"meta.settings.{k}" for k in ("steps", "tasks_per_step", "batch_size", "inner_steps",
                                                    "task_augment"))  # what `sup` is matched to

STAGES: dict[str, Stage] = {s.kind: s for s in (
    Stage("prepare", "tasks.preprocess.prepare:prepare", (Arg("DATASET", "domains"),), params=("data",)),
    Stage("init", "tasks.initialize:run_init", (Arg("KIND", "init.kinds"), SEED),
          params=("model", "init.pretrained_path"), checkpoint_artifact=True),
    Stage("meta_init", "tasks.meta_init:run_meta_init", (Arg("VARIANT", "meta.variants"), SEED),
          params=(*_TRAINING, "meta.start", "meta.settings", "runtime.numerics"), trains=True, output="{0}",
          metric_names=_META_LOGS, checkpoint_artifact=True),
    Stage("supervised", "tasks.finetune:run_supervised", (SEED,),
          params=(*_TRAINING, "finetune.settings", "meta.start", *_META_BUDGET, "runtime.numerics"), trains=True,
          output="sup", metric_names=_SUPERVISED_LOGS, checkpoint_artifact=True),
    Stage("finetune", "tasks.finetune:run_finetune", (Arg("START", "finetune.starts"), SEED),
          params=(*_TRAINING, "finetune.steps", "finetune.batch_size", "finetune.settings", "runtime.numerics"),
          trains=True, output="ft_{0}", metric_names=_SUPERVISED_LOGS, checkpoint_artifact=True, logged_model=True),
    Stage("evaluate", "tasks.evaluate:run_evaluate_all",  # every model x dataset x seed
          params=("seeds", "domains", "train_domain", "evaluate", "runtime.numerics.compile",
                  "runtime.numerics.compile_mode"),
          evaluations=True, expected_files="tasks.evaluate:metrics_files"),
    Stage("report", "tasks.report:run_report", params=("seeds", "domains", "train_domain", "evaluate", "report"),
          report=True),
)}


def arg_table() -> dict[str, list[tuple[str, str]]]:
    """Stage kind -> its arguments as (NAME, the params.yaml list of its values), for help texts and forms."""
    return {kind: [(a.name, a.choices) for a in stage.args] for kind, stage in STAGES.items()}
