"""The meta_init stage: Reptile meta-initialisation on the training domain (stage 1 of the paper).

Stage logic only: the meta-learning algorithm itself is `models.reptile.Reptile`, generic over models and losses.
Here it is wired to the paper's choices: one task = one mini-batch of the training domain, fresh online
augmentation at each inner step, task augmentation with a second mini-batch as the partner task.

With runtime.nproc_per_node > 1 the stage runs under torchrun (tasks/distributed.py): every rank adapts to its own
tasks of each outer step and Reptile all-reduces the deltas, so the ranks hold identical meta weights throughout.
Which stream batches and random draws a rank uses is laid out in tasks/distributed.py; the point of that layout is
that N ranks with T tasks each compute the same update as one process with N*T tasks per step.
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
    meta_positions,
    needs_launch,
    rank_and_world,
    task_generator,
    training_device,
)
from tasks.finetune import augment_fn
from tasks.io import content_hash
from tasks.params import Params, params_hash, subset
from tasks.preprocess.shards import ShardDataset, shard_path
from tasks.resume import ResumeState

CURVE_COLUMNS = ["step", "loss_first", "loss_last", "loss_task_augment", "update_norm"]


def run_meta_init(params: Params, root: Path, variant: str = "meta", tracker: Tracker | None = None,
                  seed: int | None = None) -> dict[str, Any]:
    """Learn meta-initialisation `variant` (a key of meta.variants: 'meta' is the paper's, others ablations).

    `meta.tasks_per_step` is per process: under torchrun an outer step averages tasks_per_step * nproc tasks.
    """
    tracker = tracker or NullTracker()
    seed = training_seed(params, seed)
    if needs_launch(params):
        return launch(params, root, "meta_init", variant, seed, tracker, paths(root, seed)["curves"] / f"{variant}.csv",
                      {c: f"meta_{c}" for c in CURVE_COLUMNS if c != "step"})
    rank, world = rank_and_world()
    main = is_main_rank()
    mp = params.meta.variant(variant)
    p = paths(root, seed)
    device = training_device(params)
    fmt = memory_format(params, device)
    init = p["checkpoints"] / "scratch.pt"
    model, init_payload = model_from_checkpoint(init)
    apply_memory_format(model.to(device), fmt).train()
    train = shard_path(p["prepared"] / params.data.train_domain, "train")
    data_hash = content_hash(train)

    def autocast(fn):  # forward + loss in the runtime.amp precision; Reptile's updates stay float32
        @functools.wraps(fn)
        def wrapped(*args: Any) -> torch.Tensor:
            with precision_context(params, device):
                return fn(*args)
        return wrapped

    # Every task carries its own generator (batch["generator"], seeded from its global task index), used
    # instead of the one Reptile passes in: the draws of a task then do not depend on which rank runs it or on
    # how many tasks ran before it in the same process.
    ta = mp.task_augment
    task_augment = None
    if ta.mixup or ta.channel_shuffle:
        criterion = functools.partial(depth_loss, smooth_weight=params.loss.smooth_weight,
                                      scale_decay=params.loss.scale_decay)
        shared = make_task_augment(mix_alpha=ta.mixup_alpha if ta.mixup else None,
                                   shuffle_p=ta.shuffle_fraction if ta.channel_shuffle else 0.0, criterion=criterion)
        task_augment = autocast(lambda model, batch, partner, _g: shared(model, batch, partner, batch["generator"]))
    inner_augment = None
    if mp.online_augment:
        augment = augment_fn(params)
        inner_augment = lambda batch, _g: augment(batch, batch["generator"])  # noqa: E731
    seed_everything(seed)
    g = torch.Generator().manual_seed(seed)  # Reptile's own stream: unused while tasks bring theirs
    reptile = Reptile(
        model, autocast(loss_fn_for(params.loss)), inner_lr=mp.inner_lr, inner_steps=mp.inner_steps,
        outer_lr=mp.outer_lr, outer_optimizer=mp.outer_optimizer, clip_grad_norm=mp.clip_grad_norm,
        inner_augment=inner_augment, task_augment=task_augment, generator=g, skip_nonfinite=mp.skip_nonfinite_steps,
    )
    reptile.inner_model = maybe_compile(reptile.inner_model, params, device)  # forward only; `model` is saved
    out = p["checkpoints"] / f"{variant}.pt"
    curve = CurveWriter(p["curves"] / f"{variant}.csv", CURVE_COLUMNS)
    resume = ResumeState(out, params_hash([subset(params, ["seed", "data", "loss", "augment"]), seed, mp.model_dump(),
                                           content_hash(init), data_hash, {"world_size": world}]),
                         params.runtime.resume_every)
    # Rank 0 writes the snapshot, every rank restores it (the same file, so the same state everywhere).
    start = resume.load(model=model, reptile=reptile, generator=g, curve=curve)
    barrier()
    per_rank = mp.tasks_per_step
    per_step = per_rank * world  # tasks averaged by one outer step, over all ranks
    batches = batches_at(ShardDataset(train), mp.batch_size, seed,
                         meta_positions(start, per_rank, rank, world, partners=task_augment is not None),
                         **loader_options(params, device))
    stats: dict[str, float] = {}
    with Progress(transient=True, disable=not main) as bar:
        job = bar.add_task(f"meta_init {variant} (Reptile)", total=mp.steps, completed=start)
        skipped = 0
        for step in range(start, mp.steps):
            tasks = []
            for i in range(per_rank):
                batch = batch_to(next(batches), device, fmt)
                batch["generator"] = task_generator(seed, step * per_step + rank * per_rank + i)
                tasks.append(batch)
            partners = [batch_to(next(batches), device, fmt) for _ in range(per_rank)] if task_augment else None
            stats = reptile.meta_step(tasks, partners)  # losses and update norm are over all ranks' tasks
            if stats.get("skipped"):
                skipped += 1
                print(f"meta_init {variant}: step {step}: non-finite loss, step skipped "
                      f"({skipped} so far; meta.skip_nonfinite_steps)", flush=True)
            else:
                check_finite(stats["loss_last"], f"meta_init {variant}", step, resume.path)
            if step % mp.log_every == 0 or step == mp.steps - 1:
                curve.add({"step": step, **stats})
                if main:
                    tracker.log_metrics({f"meta_{k}": v for k, v in stats.items()}, step)
            if main and resume.due(step):
                resume.save(step + 1, model=model, reptile=reptile, generator=g, curve=curve)
            bar.advance(job)
            if main:
                report_progress(f"meta_init {variant}", step, mp.steps, stats["loss_last"], tracker=tracker)
    apply_memory_format(model, torch.contiguous_format)  # checkpoints hold plain layouts whatever trained them
    digests = check_ranks_agree(model, f"meta_init {variant}")
    if main:
        save_checkpoint(out, model, init_payload["model_params"], step=mp.steps, data_hash=data_hash,
                        info={"stage": "meta_init", "variant": variant, "inner_steps": mp.inner_steps,
                              "tasks_per_step": mp.tasks_per_step, "world_size": world, "seed": seed})
        curve.close()
        resume.clear()
    result = {"checkpoint": str(out.relative_to(root)), **{f"final_{k}": v for k, v in stats.items()}}
    if world > 1:
        result.update(world_size=world, rank_weight_digests=digests)
    return result
