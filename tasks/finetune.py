"""The finetune stage: stage 2 of the paper, supervised Adam with cosine annealing from any start checkpoint.

Every start (scratch, meta, ...) is trained with identical data order, augmentation draws and seed, so the only
difference between the rows of the report is where the weights started. Under several processes (torchrun, started
by the stage dispatcher) finetune.batch_size stays the global batch and each rank trains on its slice of it
(tasks/distributed.py).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from tasks.distributed import batches_at, mean_across_ranks, stream_seed
from tasks.io import MetadepthError
from tasks.layout import training_seed
from tasks.params import Params, subset
from tasks.preprocess.shards import ShardDataset
from tasks.telemetry import Tracker
from tasks.training import TrainingResult, TrainingRun, augment_fn, loss_fn_for

CURVE_COLUMNS = ["step", "loss", "lr"]
METRIC_NAMES = {"loss": "train_loss", "lr": "lr"}


def run_finetune(params: Params, root: Path, start: str, tracker: Tracker | None = None,
                 seed: int | None = None) -> TrainingResult:
    """Fine-tune from start checkpoint `start` (an entry of finetune.inits) of `seed`; writes ft_<start>.pt."""
    cfg = params.finetune
    seed = training_seed(params, seed)
    if start not in cfg.inits:
        raise MetadepthError(f"finetune run {start!r} is not in finetune.inits {cfg.inits}")
    run = TrainingRun(params, root, label=f"finetune {start}", start=start, output=f"ft_{start}", seed=seed,
                      total=cfg.steps, columns=CURVE_COLUMNS, metric_names=METRIC_NAMES, log_every=cfg.log_every,
                      resume_inputs=[subset(params, ["seed", "data", "loss", "augment", "finetune"]), start, seed],
                      tracker=tracker)
    rt, model = run.rt, run.model
    if cfg.batch_size % rt.world:
        raise MetadepthError(f"finetune.batch_size {cfg.batch_size} is the global batch and cannot be split over "
                             f"{rt.world} processes; make it a multiple of runtime.nproc_per_node")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.steps, eta_min=cfg.lr_min)
    # The augmentation generator is reseeded at every step from (seed, step, rank): a resumed run or another
    # process count needs no generator state to draw what an uninterrupted run draws.
    start_step = run.resume_from_snapshot(optimizer=optimizer, scheduler=scheduler)
    # DDP averages the gradients of the ranks' slices in backward; it wraps the model only after the resume
    # load, and `model` (unwrapped) is what gets saved, so checkpoints have the same keys for any process count.
    net = DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None) \
        if rt.world > 1 else model
    net = rt.compile(net)  # forward only: `model` (plain keys) is what gets saved
    batches = batches_at(ShardDataset(run.train_shard), cfg.batch_size, run.seed, itertools.count(start_step),
                         part=(rt.rank, rt.world), **rt.loader_kwargs)
    loss_fn = loss_fn_for(params.loss)
    augment = augment_fn(params.augment) if cfg.online_augment else None
    loss_value = float("nan")
    for step in run.steps():
        batch = rt.batch(next(batches))
        if augment is not None:
            batch = augment(batch, run.generator.manual_seed(stream_seed(run.seed, step, rt.rank)))
        with rt.autocast():
            loss = loss_fn(net, batch)
        loss_value = mean_across_ranks(loss)  # the global batch's loss, the same number on every rank
        run.check_finite(loss_value, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        optimizer.step()
        scheduler.step()
        run.log(step, {"loss": loss_value, "lr": scheduler.get_last_lr()[0]}, loss_value)
    return run.finish({"stage": "finetune", "init": start, "source": f"{start}.pt"}, {"loss": loss_value})
