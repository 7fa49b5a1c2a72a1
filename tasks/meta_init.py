"""The meta_init stage: Reptile meta-initialisation on the training domain (stage 1 of the paper).

Stage logic only: the meta-learning algorithm itself is `models.reptile.Reptile`, generic over models and losses.
Here it is wired to the paper's choices: one task = one mini-batch of the training domain, fresh online
augmentation at each inner step, task augmentation with a second mini-batch as the partner task.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress

from models.augment import make_task_augment
from models.losses import depth_loss
from models.reptile import Reptile
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
from tasks.finetune import augment_fn
from tasks.io import content_hash
from tasks.params import Params, params_hash, subset
from tasks.preprocess.shards import ShardDataset, infinite_batches, shard_path
from tasks.resume import ResumeState


def run_meta_init(params: Params, root: Path, tracker: Tracker | None = None) -> dict[str, Any]:
    tracker = tracker or NullTracker()
    mp = params.meta
    p = paths(root)
    device = select_device(params)
    init = p["checkpoints"] / "init.pt"
    model, init_payload = model_from_checkpoint(init)
    model.to(device).train()
    train = shard_path(p["prepared"] / params.data.train_domain, "train")
    data_hash = content_hash(train)

    ta = mp.task_augment
    task_augment = None
    if ta.mixup or ta.channel_shuffle:
        criterion = functools.partial(depth_loss, smooth_weight=params.loss.smooth_weight,
                                      scale_decay=params.loss.scale_decay)
        task_augment = make_task_augment(mix_alpha=ta.mixup_alpha if ta.mixup else None,
                                         shuffle_p=ta.shuffle_fraction if ta.channel_shuffle else 0.0,
                                         criterion=criterion)
    seed_everything(params.seed)
    g = torch.Generator().manual_seed(params.seed)
    reptile = Reptile(
        model, loss_fn_for(params.loss), inner_lr=mp.inner_lr, inner_steps=mp.inner_steps, outer_lr=mp.outer_lr,
        outer_optimizer=mp.outer_optimizer, clip_grad_norm=mp.clip_grad_norm,
        inner_augment=augment_fn(params) if mp.online_augment else None, task_augment=task_augment, generator=g,
    )
    out = p["checkpoints"] / "meta.pt"
    curve = CurveWriter(p["curves"] / "meta.csv",
                        ["step", "loss_first", "loss_last", "loss_task_augment", "update_norm"])
    resume = ResumeState(out, params_hash([subset(params, ["seed", "data", "loss", "augment", "meta"]),
                                           content_hash(init), data_hash]), params.runtime.resume_every)
    start = resume.load(model=model, reptile=reptile, generator=g, curve=curve)
    # Each outer step draws its tasks and then its partner tasks from one reproducible stream of mini-batches.
    per_step = mp.tasks_per_step * (2 if task_augment else 1)
    batches = infinite_batches(ShardDataset(train), mp.batch_size, params.seed, params.runtime.num_workers,
                               start_batch=start * per_step)
    stats: dict[str, float] = {}
    with Progress(transient=True) as bar:
        job = bar.add_task("meta_init (Reptile)", total=mp.steps, completed=start)
        for step in range(start, mp.steps):
            tasks = [to_device(next(batches), device) for _ in range(mp.tasks_per_step)]
            partners = [to_device(next(batches), device) for _ in range(mp.tasks_per_step)] if task_augment else None
            stats = reptile.meta_step(tasks, partners)
            check_finite(stats["loss_last"], "meta_init", step, resume.path)
            if step % mp.log_every == 0 or step == mp.steps - 1:
                curve.add({"step": step, **stats})
                tracker.log_metrics({f"meta_{k}": v for k, v in stats.items()}, step)
            if resume.due(step):
                resume.save(step + 1, model=model, reptile=reptile, generator=g, curve=curve)
            bar.advance(job)
            report_progress("meta_init", step, mp.steps, stats["loss_last"])
    save_checkpoint(out, model, init_payload["model_params"], step=mp.steps, data_hash=data_hash,
                    info={"stage": "meta_init", "inner_steps": mp.inner_steps, "tasks_per_step": mp.tasks_per_step})
    curve.close()
    resume.clear()
    return {"checkpoint": str(out.relative_to(root)), **{f"final_{k}": v for k, v in stats.items()}}
