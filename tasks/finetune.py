"""Supervised learning, the paper's stage 2: Adam with cosine annealing from a start checkpoint.

Two stages share the recipe:
- finetune: from any start (scratch, meta, sup, ...) for finetune.steps; writes ft_<start>. Every start is trained
  with identical data order, augmentation draws and seed, so the only difference between the report's rows is
  where the weights started.
- supervised: direct supervised learning from meta.start with the meta stage's budget (the same number of
  gradient steps on batches of meta.settings.batch_size, hence the same image presentations); writes `sup`, the
  comparison of the paper's first claim.
Under several processes (torchrun, started by the stage dispatcher) the batch is the global batch and each rank
trains on its slice of it (tasks/distributed.py).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from tasks.distributed import batches_at, mean_across_ranks, stream_seed
from tasks.io import MetadepthError
from tasks.layout import training_seed
from tasks.params import Params
from tasks.preprocess.shards import ShardDataset
from tasks.telemetry import Tracker
from tasks.training import TrainingResult, TrainingRun, augment_fn

CURVE_COLUMNS = ["step", "loss", "lr", "grad_norm", "val_loss"]
METRIC_NAMES = {"loss": "train_loss", "lr": "lr", "grad_norm": "grad_norm", "val_loss": "val_loss"}
SUP = "sup"  # the checkpoint of direct supervised learning with the meta stage's budget


def train_supervised(params: Params, root: Path, *, stage: str, start: str, output: str, steps: int,
                     batch_size: int, seed: int, tracker: Tracker | None, info: dict) -> TrainingResult:
    """`steps` Adam steps (finetune.settings: lr, cosine to lr_min) on batches of `batch_size` from `start`."""
    cfg = params.finetune.settings
    run = TrainingRun(params, root, stage=stage, label=f"{stage} {start}", start=start, output=output, seed=seed,
                      total=steps,
                      columns=CURVE_COLUMNS, metric_names=METRIC_NAMES, log_every=cfg.log_every,
                      val_every=cfg.val_every, tracker=tracker,
                      resume_inputs=[start, seed,
                                     {"stage": stage, "steps": steps, "batch_size": batch_size}])
    rt, model = run.rt, run.model
    if batch_size % rt.world:
        raise MetadepthError(f"{stage}: batch size {batch_size} is the global batch and cannot be split over "
                             f"{rt.world} processes; make it a multiple of runtime.numerics.nproc_per_node")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=cfg.lr_min)
    # The augmentation generator is reseeded at every step from (seed, step, rank): a resumed run or another
    # process count needs no generator state to draw what an uninterrupted run draws.
    start_step = run.resume_from_snapshot(optimizer=optimizer, scheduler=scheduler)
    # DDP averages the gradients of the ranks' slices in backward; it wraps the model only after the resume
    # load, and `model` (unwrapped) is what gets saved, so checkpoints have the same keys for any process count.
    net = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None) \
        if rt.world > 1 else model
    net = rt.compile(net)  # forward only: `model` (plain keys) is what gets saved
    batches = batches_at(ShardDataset(run.train_shard), batch_size, seed, itertools.count(start_step),
                         part=(rt.rank, rt.world), **rt.loader_kwargs)
    loss_fn = run.loss_fn
    augment = augment_fn(params.augment) if cfg.online_augment else None
    loss_value = float("nan")
    for step in run.steps():
        batch = rt.batch(next(batches))
        if augment is not None:
            batch = augment(batch, run.generator.manual_seed(stream_seed(seed, step, rt.rank)))
        with rt.autocast():
            loss = loss_fn(net, batch)
        loss_value = mean_across_ranks(loss)  # the global batch's loss, the same number on every rank
        run.check_finite(loss_value, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad_norm:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        optimizer.step()
        scheduler.step()
        run.log(step, {"loss": loss_value, "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm.item()},
                loss_value)
    return run.finish(info, {"loss": loss_value})


def run_finetune(params: Params, root: Path, start: str, tracker: Tracker | None = None,
                 seed: int | None = None) -> TrainingResult:
    """Fine-tune from start checkpoint `start` (an entry of finetune.starts) of `seed`; writes ft_<start>.pt."""
    cfg = params.finetune
    if start not in cfg.starts:
        raise MetadepthError(f"finetune run {start!r} is not in finetune.starts {cfg.starts}")
    return train_supervised(params, root, stage="finetune", start=start, output=f"ft_{start}", steps=cfg.steps,
                            batch_size=cfg.batch_size, seed=training_seed(params, seed), tracker=tracker,
                            info={"stage": "finetune", "start": start})


def run_supervised(params: Params, root: Path, tracker: Tracker | None = None,
                   seed: int | None = None) -> TrainingResult:
    """Direct supervised learning from meta.start with the meta stage's budget; writes sup.pt (the first claim)."""
    meta, start = params.meta.settings, params.meta.start
    steps = meta.gradient_steps(params.runtime.numerics.nproc_per_node)
    return train_supervised(params, root, stage="supervised", start=start, output=SUP, steps=steps,
                            batch_size=meta.batch_size, seed=training_seed(params, seed), tracker=tracker,
                            info={"stage": "supervised", "start": start, "matched_to": "meta",
                                  "gradient_steps": steps, "batch_size": meta.batch_size})
