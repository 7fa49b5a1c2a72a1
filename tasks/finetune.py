"""The finetune stage: stage 2 of the paper, supervised Adam with cosine annealing from any initial checkpoint.

Every initialisation (scratch, meta, ...) is trained with identical data order, augmentation draws and seed, so the
only difference between the rows of the report is where the weights started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress

from models.augment import online_augment
from tasks.common import (
    CurveWriter,
    NullTracker,
    Tracker,
    check_finite,
    loss_fn_for,
    model_from_checkpoint,
    paths,
    report_progress,
    save_checkpoint,
    seed_everything,
    select_device,
    to_device,
)
from tasks.io import content_hash
from tasks.params import Params, params_hash, subset
from tasks.preprocess.shards import ShardDataset, infinite_batches, shard_path
from tasks.resume import ResumeState

SOURCE_CHECKPOINT = {"init": "init", "meta": "meta"}  # finetune.inits values -> checkpoint names


def augment_fn(params: Params):
    a = params.augment
    return lambda batch, g: dict(batch, **dict(zip(("rgb", "depth"), online_augment(
        batch["rgb"], batch["depth"], g, brightness=a.brightness, contrast=a.contrast, saturation=a.saturation,
        hue=a.hue, flip_prob=a.flip_prob), strict=True)))


def run_finetune(params: Params, root: Path, name: str, tracker: Tracker | None = None) -> dict[str, Any]:
    tracker = tracker or NullTracker()
    ft = params.finetune
    p = paths(root)
    device = select_device(params)
    source = p["checkpoints"] / f"{SOURCE_CHECKPOINT[ft.inits[name]]}.pt"
    model, init_payload = model_from_checkpoint(source)
    model.to(device).train()
    train = shard_path(p["prepared"] / params.data.train_domain, "train")
    data_hash = content_hash(train)

    optimizer = torch.optim.Adam(model.parameters(), lr=ft.lr, weight_decay=ft.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=ft.steps, eta_min=ft.lr_min)
    out = p["checkpoints"] / f"ft_{name}.pt"
    curve = CurveWriter(p["curves"] / f"ft_{name}.csv", ["step", "loss", "lr"])
    # Same seed for every initialisation: the scratch and meta runs see the same batches and augmentations.
    seed_everything(params.seed)
    g = torch.Generator().manual_seed(params.seed)
    # A resume file is only valid for the exact same inputs; anything else starts over.
    resume = ResumeState(out, params_hash([subset(params, ["seed", "data", "loss", "augment", "finetune"]),
                                           name, content_hash(source), data_hash]), params.runtime.resume_every)
    start = resume.load(model=model, optimizer=optimizer, scheduler=scheduler, generator=g, curve=curve)
    batches = infinite_batches(ShardDataset(train), ft.batch_size, params.seed, params.runtime.num_workers,
                               start_batch=start)
    loss_fn = loss_fn_for(params.loss)
    augment = augment_fn(params) if ft.online_augment else None
    loss_value = float("nan")
    with Progress(transient=True) as bar:
        job = bar.add_task(f"finetune {name}", total=ft.steps, completed=start)
        for step in range(start, ft.steps):
            batch = to_device(next(batches), device)
            if augment is not None:
                batch = augment(batch, g)
            loss = loss_fn(model, batch)
            loss_value = loss.item()
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
                tracker.log_metrics({"train_loss": loss_value, "lr": row["lr"]}, step)
            if resume.due(step):
                resume.save(step + 1, model=model, optimizer=optimizer, scheduler=scheduler, generator=g,
                            curve=curve)
            bar.advance(job)
            report_progress(f"finetune {name}", step, ft.steps, loss_value)
    save_checkpoint(out, model, init_payload["model_params"], step=ft.steps, data_hash=data_hash,
                    info={"stage": "finetune", "init": name, "source": source.name})
    curve.close()
    resume.clear()
    return {"checkpoint": str(out.relative_to(root)), "final_loss": loss_value, "steps": ft.steps}
