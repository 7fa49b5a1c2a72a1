"""The shell both training stages share, so meta_init and finetune hold only what is theirs.

`TrainingRun` owns everything around the update: the runtime, the start checkpoint, the training data and its hash,
seeding, the resume snapshot, the progress loop with its curve, tracker and log lines, and the final checkpoint. A
stage builds its optimiser (or Reptile), calls `resume(...)` with what must survive a restart, then loops over
`run.steps()` and calls `run.log(...)` after each update.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress, TextColumn

from models.augment import online_augment_batch
from models.losses import depth_loss
from tasks.checkpoints import model_from_checkpoint, save_checkpoint
from tasks.distributed import barrier, check_ranks_agree
from tasks.io import MetadepthError, content_hash
from tasks.layout import Layout, training_seed
from tasks.param_values import params_hash, subset
from tasks.params import AugmentParams, LossParams, Params
from tasks.preprocess.shards import ShardDataset, shard_path
from tasks.resume import ResumeState
from tasks.runtime import Runtime
from tasks.stages import STAGES
from tasks.telemetry import CurveWriter, NullTracker, Tracker, report_progress

Batch = dict[str, torch.Tensor]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def augment_fn(augment: AugmentParams) -> Callable[[Batch, torch.Generator], Batch]:
    """The paper's online augmentation with the params.yaml strengths, as `fn(batch, generator)`."""
    return functools.partial(online_augment_batch, **augment.model_dump())


def criterion_for(loss: LossParams) -> Callable[[list[torch.Tensor], Batch], torch.Tensor]:
    """The params.yaml training loss of predictions against a batch: one loss for every term of every stage."""

    def criterion(preds: list[torch.Tensor], batch: Batch) -> torch.Tensor:
        return depth_loss(preds, batch["depth"], smooth_weight=loss.smooth_weight, scale_decay=loss.scale_decay,
                          image=batch["rgb"], smoothness=loss.smoothness)

    return criterion


def loss_fn_for(loss: LossParams) -> Callable[..., torch.Tensor]:
    """The training loss as `loss_fn(model, batch)`, the signature models.reptile.Reptile expects."""
    criterion = criterion_for(loss)

    def loss_fn(model: torch.nn.Module, batch: Batch, **forward_kwargs: Any) -> torch.Tensor:
        return criterion(model(batch["rgb"], **forward_kwargs), batch)

    return loss_fn


def check_finite(value: float, stage: str, step: int, last_good: Path | None) -> None:
    if not math.isfinite(value):
        where = f"; the last good state is {last_good}" if last_good and last_good.exists() else ""
        raise MetadepthError(f"{stage}: loss became {value} at step {step}{where}; lower the learning rate or "
                             "set clip_grad_norm")


@dataclass
class TrainingResult:
    """What a training stage hands to the orchestration: its checkpoint and the last logged numbers."""

    checkpoint: str  # relative to the project root
    steps: int
    final: dict[str, float]
    world_size: int = 1
    rank_weight_digests: list[str] = field(default_factory=list)


class TrainingRun:
    """One training stage's run of `total` steps from checkpoint `start`, writing checkpoint and curve `output`.

    `stage` is its kind in tasks/stages.py, whose params sections key the resume snapshot together with
    `resume_inputs` (what else decides the run: names, a variant's settings), the start checkpoint, the data and the
    process count, so a snapshot made from other inputs is never picked up.
    `metric_names` maps curve columns to the tracker's metric names.
    """

    def __init__(self, params: Params, root: Path, *, stage: str, label: str, start: str, output: str, seed: int | None,
                 total: int, columns: list[str], metric_names: dict[str, str], log_every: int, val_every: int,
                 resume_inputs: list[Any], tracker: Tracker | None = None):
        self.label, self.total, self.log_every, self.metric_names = label, total, log_every, metric_names
        self.val_every, self.loss_fn = val_every, loss_fn_for(params.loss)  # the stage's training loss
        self.tracker = tracker or NullTracker()
        self.seed = training_seed(params, seed)
        self.rt = Runtime.from_params(params.runtime)
        self.root, layout = root, Layout(root, self.seed)
        start_path = layout.checkpoint(start)
        self.model, payload = model_from_checkpoint(start_path)
        self.model_params = payload["model_params"]
        self.rt.place(self.model).train()
        self.train_shard = shard_path(layout.prepared / params.train_domain, "train")
        self.val_shard = shard_path(layout.prepared / params.train_domain, "val")
        self.data_hash = content_hash(self.train_shard)
        self.out = layout.checkpoint(output)
        self.curve = CurveWriter(layout.curve(output), columns)
        seed_everything(self.seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        key = params_hash([subset(params, STAGES[stage].params), *resume_inputs, content_hash(start_path),
                           self.data_hash, {"world_size": self.rt.world}])
        self.resume = ResumeState(self.out, key, params.runtime.host.resume_every)
        self.start, self._stateful, self._loss = 0, {}, float("nan")

    def resume_from_snapshot(self, **stateful: Any) -> int:
        """Restore the snapshot (if one matches) into the model, the generator and `stateful`; the first step."""
        self._stateful = stateful
        # Rank 0 writes the snapshot, every rank restores it (the same file, so the same state everywhere).
        self.start = self.resume.load(model=self.model, generator=self.generator, curve=self.curve, **stateful)
        barrier()
        return self.start

    def check_finite(self, value: float, step: int) -> None:
        check_finite(value, self.label, step, self.resume.path)

    def steps(self) -> Iterator[int]:
        """The remaining steps; after each: the resume snapshot when due, the bar (with the loss) on a terminal,
        else a progress line every 10%."""
        with Progress(*Progress.get_default_columns(), TextColumn("loss {task.fields[loss]:.4f}"), transient=True,
                      disable=not self.rt.main) as bar:
            job = bar.add_task(self.label, total=self.total, completed=self.start, loss=float("nan"))
            on_terminal = bar.console.is_terminal
            for step in range(self.start, self.total):
                yield step
                if self.rt.main and self.resume.due(step):
                    self.resume.save(step + 1, model=self.model, generator=self.generator, curve=self.curve,
                                     **self._stateful)
                bar.update(job, advance=1, loss=self._loss)
                if self.rt.main:
                    report_progress(self.label, step, self.total, self._loss, tracker=self.tracker,
                                    echo=not on_terminal)

    @torch.no_grad()
    def validation_loss(self, batch_size: int = 32) -> float:
        """The training loss of the current weights on the training domain's validation split (no augmentation).

        Read without a DataLoader: iterating one draws a seed from torch's global generator, which must stay as
        the training left it.
        """
        self.model.eval()
        total, n = 0.0, 0
        with ShardDataset(self.val_shard) as data:
            for lo in range(0, len(data), batch_size):
                items = [data[i] for i in range(lo, min(len(data), lo + batch_size))]
                batch = self.rt.batch(torch.utils.data.default_collate(items))
                with self.rt.autocast():
                    total += self.loss_fn(self.model, batch).item() * len(items)
                n += len(items)
        self.model.train()
        return total / max(n, 1)

    def log(self, step: int, row: dict[str, float], loss: float) -> None:
        """Record step `step`: `loss` for the progress line; `row` into the curve and tracker every log_every,
        with the validation loss after every val_every steps (and after the last)."""
        self._loss = loss
        last = step == self.total - 1
        if (step + 1) % self.val_every == 0 or last:
            row = {**row, "val_loss": self.validation_loss()}
        if step % self.log_every == 0 or last or "val_loss" in row:
            self.curve.add({"step": step, **row})
            if self.rt.main:
                self.tracker.log_metrics({self.metric_names[k]: v for k, v in row.items()
                                          if k in self.metric_names}, step)

    def finish(self, info: dict[str, Any], final: dict[str, float]) -> TrainingResult:
        """Save the checkpoint (plain layout, ranks checked to agree), close the curve, drop the snapshot."""
        self.model.to(memory_format=torch.contiguous_format)  # checkpoints hold plain layouts whatever trained them
        digests = check_ranks_agree(self.model, self.label)
        if self.rt.main:
            save_checkpoint(self.out, self.model, self.model_params, step=self.total, data_hash=self.data_hash,
                            info={**info, "world_size": self.rt.world, "seed": self.seed})
            self.curve.close()
            self.resume.clear()
        return TrainingResult(checkpoint=str(self.out.relative_to(self.root)), steps=self.total, final=final,
                              world_size=self.rt.world, rank_weight_digests=digests)
