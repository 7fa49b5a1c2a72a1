"""The finetune stage: stage 2 of the paper, supervised Adam with cosine annealing from any initial checkpoint.

Every initialisation (scratch, meta, ...) is trained with identical data order, augmentation draws and seed, so the
only difference between the rows of the report is where the weights started.

With runtime.nproc_per_node > 1 the stage runs under torchrun with DistributedDataParallel: finetune.batch_size
stays the global batch, each rank trains on its slice of it (see tasks/distributed.py), and rank 0 writes the
checkpoint, curve and resume snapshots.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch.nn.parallel import DistributedDataParallel

from models.augment import online_augment_batch
from tasks.common import (
    CurveWriter,
    NullTracker,
    Tracker,
    apply_memory_format,
    batch_to,
    check_finite,
    loader_options,
    loss_fn_for,
    maybe_compile,
    memory_format,
    model_from_checkpoint,
    paths,
    precision_context,
    report_progress,
    save_checkpoint,
    seed_everything,
    training_seed,
)
from tasks.distributed import (
    barrier,
    batches_at,
    check_ranks_agree,
    is_main_rank,
    launch,
    mean_across_ranks,
    needs_launch,
    rank_and_world,
    stream_seed,
    training_device,
)
from tasks.io import MetadepthError, content_hash
from tasks.params import Params, params_hash, subset
from tasks.preprocess.shards import ShardDataset, shard_path
from tasks.resume import ResumeState


def augment_fn(params: Params) -> Callable[[dict[str, torch.Tensor], torch.Generator], dict[str, torch.Tensor]]:
    """The paper's online augmentation with the params.yaml strengths, as `fn(batch, generator)`."""
    return functools.partial(online_augment_batch, **params.augment.model_dump())


def run_finetune(params: Params, root: Path, name: str, tracker: Tracker | None = None,
                 seed: int | None = None) -> dict[str, Any]:
    """Fine-tune from start checkpoint `name` (an entry of finetune.inits) of `seed`; writes ft_<name>.pt."""
    tracker = tracker or NullTracker()
    ft = params.finetune
    if name not in ft.inits:
        raise MetadepthError(f"finetune run {name!r} is not in finetune.inits {ft.inits}")
    seed = training_seed(params, seed)
    if needs_launch(params):
        return launch(params, root, "finetune", name, seed, tracker, paths(root, seed)["curves"] / f"ft_{name}.csv",
                      {"loss": "train_loss", "lr": "lr"})
    rank, world = rank_and_world()
    main = is_main_rank()
    if ft.batch_size % world:
        raise MetadepthError(f"finetune.batch_size {ft.batch_size} is the global batch and cannot be split over "
                             f"{world} processes; make it a multiple of runtime.nproc_per_node")
    p = paths(root, seed)
    device = training_device(params)
    fmt = memory_format(params, device)
    source = p["checkpoints"] / f"{name}.pt"
    model, init_payload = model_from_checkpoint(source)
    apply_memory_format(model.to(device), fmt).train()
    train = shard_path(p["prepared"] / params.data.train_domain, "train")
    data_hash = content_hash(train)

    optimizer = torch.optim.Adam(model.parameters(), lr=ft.lr, weight_decay=ft.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=ft.steps, eta_min=ft.lr_min)
    out = p["checkpoints"] / f"ft_{name}.pt"
    curve = CurveWriter(p["curves"] / f"ft_{name}.csv", ["step", "loss", "lr"])
    # Same seed for every initialisation: the scratch and meta runs see the same batches and augmentations.
    # The augmentation generator is reseeded at every step from (seed, step, rank): a resumed run or another
    # process count needs no generator state to draw what an uninterrupted run draws.
    seed_everything(seed)
    g = torch.Generator().manual_seed(seed)
    # A resume file is only valid for the exact same inputs; anything else starts over.
    resume = ResumeState(out, params_hash([subset(params, ["seed", "data", "loss", "augment", "finetune"]),
                                           name, seed, content_hash(source), data_hash, {"world_size": world}]),
                         params.runtime.resume_every)
    # Rank 0 writes the snapshot, every rank restores it (the same file, so the same state everywhere).
    start = resume.load(model=model, optimizer=optimizer, scheduler=scheduler, generator=g, curve=curve)
    barrier()
    # DDP averages the gradients of the ranks' slices in backward; it wraps the model only after the resume
    # load, and `model` (unwrapped) is what gets saved, so checkpoints have the same keys for any process count.
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    net = maybe_compile(net, params, device)  # forward only: `model` (plain keys) is what gets saved
    batches = batches_at(ShardDataset(train), ft.batch_size, seed, itertools.count(start),
                         part=(rank, world), **loader_options(params, device))
    loss_fn = loss_fn_for(params.loss)
    augment = augment_fn(params) if ft.online_augment else None
    loss_value = float("nan")
    with Progress(transient=True, disable=not main) as bar:
        job = bar.add_task(f"finetune {name}", total=ft.steps, completed=start)
        for step in range(start, ft.steps):
            batch = batch_to(next(batches), device, fmt)
            if augment is not None:
                batch = augment(batch, g.manual_seed(stream_seed(seed, step, rank)))
            with precision_context(params, device):
                loss = loss_fn(net, batch)
            loss_value = mean_across_ranks(loss)  # the global batch's loss, the same number on every rank
            check_finite(loss_value, f"finetune {name}", step, resume.path)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if ft.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), ft.clip_grad_norm)
            optimizer.step()
            scheduler.step()
            if step % ft.log_every == 0 or step == ft.steps - 1:
                row = {"step": step, "loss": loss_value, "lr": scheduler.get_last_lr()[0]}
                curve.add(row)
                if main:
                    tracker.log_metrics({"train_loss": loss_value, "lr": row["lr"]}, step)
            if main and resume.due(step):
                resume.save(step + 1, model=model, optimizer=optimizer, scheduler=scheduler, generator=g,
                            curve=curve)
            bar.advance(job)
            if main:
                report_progress(f"finetune {name}", step, ft.steps, loss_value, tracker=tracker)
    apply_memory_format(model, torch.contiguous_format)  # checkpoints hold plain layouts whatever trained them
    digests = check_ranks_agree(model, f"finetune {name}")
    if main:
        save_checkpoint(out, model, init_payload["model_params"], step=ft.steps, data_hash=data_hash,
                        info={"stage": "finetune", "init": name, "source": source.name, "world_size": world,
                              "seed": seed})
        curve.close()
        resume.clear()
    result = {"checkpoint": str(out.relative_to(root)), "final_loss": loss_value, "steps": ft.steps}
    if world > 1:
        result.update(world_size=world, rank_weight_digests=digests)
    return result
