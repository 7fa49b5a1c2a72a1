"""The meta_init stage: Reptile meta-initialisation on the training domain (stage 1 of the paper).

The algorithm is `models.reptile.Reptile`, generic over models and losses; here it is wired to the paper's choices:
one task = one mini-batch of the training domain, fresh online augmentation at each inner step, task augmentation
with a second mini-batch as the partner task. Under several processes every rank adapts to its own tasks of each
outer step and Reptile all-reduces the deltas; tasks/distributed.py lays out which rank draws what, so that N ranks
with T tasks each compute the update of one process with N*T tasks per step.
"""

from __future__ import annotations

from pathlib import Path

from models.augment import make_task_augment
from models.reptile import Reptile
from tasks.distributed import batches_at, meta_positions, task_generator
from tasks.layout import training_seed
from tasks.params import Params
from tasks.preprocess.shards import ShardDataset
from tasks.telemetry import Tracker
from tasks.training import TrainingResult, TrainingRun, augment_fn, criterion_for

CURVE_COLUMNS = ["step", "loss_first", "loss_last", "loss_task_augment", "update_norm", "grad_norm", "val_loss"]
METRIC_NAMES = {c: f"meta_{c}" for c in CURVE_COLUMNS if c != "step"}


def run_meta_init(params: Params, root: Path, variant: str = "meta", tracker: Tracker | None = None,
                  seed: int | None = None) -> TrainingResult:
    """Learn meta-initialisation `variant` (a key of meta.variants: 'meta' is the paper's, others ablations).

    `tasks_per_step` is per process: with several processes an outer step averages tasks_per_step * nproc.
    """
    settings = params.meta.variant(variant)
    seed = training_seed(params, seed)
    run = TrainingRun(params, root, stage="meta_init", label=f"meta_init {variant}", start=params.meta.start,
                      output=variant, seed=seed,
                      total=settings.steps, columns=CURVE_COLUMNS, metric_names=METRIC_NAMES,
                      log_every=settings.log_every, val_every=settings.val_every, tracker=tracker,
                      resume_inputs=[seed, settings.model_dump()])
    rt = run.rt
    ta = settings.task_augment
    task_augment = None
    if ta.mixup or ta.channel_shuffle:
        task_augment = make_task_augment(mix_alpha=ta.mixup_alpha if ta.mixup else None,
                                         shuffle_p=ta.shuffle_fraction if ta.channel_shuffle else 0.0,
                                         criterion=criterion_for(params.loss))
    reptile = Reptile(
        run.model, run.loss_fn, inner_lr=settings.inner_lr, inner_steps=settings.inner_steps,
        outer_lr=settings.outer_lr, outer_optimizer=settings.outer_optimizer, clip=settings.clip,
        clip_max=settings.clip_max,
        inner_augment=augment_fn(params.augment) if settings.online_augment else None, task_augment=task_augment,
        generator=run.generator, skip_nonfinite=settings.skip_nonfinite_steps, forward_context=rt.autocast,
    )
    reptile.inner_model = rt.compile(reptile.inner_model)  # forward only; the meta model is what gets saved
    start_step = run.resume_from_snapshot(reptile=reptile)
    per_rank = settings.tasks_per_step
    per_step = per_rank * rt.world  # tasks averaged by one outer step, over all ranks
    per_task = settings.inner_steps if settings.inner_batches == "fresh" else 1  # batches a task draws
    batches = batches_at(ShardDataset(run.train_shard), settings.batch_size, seed,
                         meta_positions(start_step, per_rank, rt.rank, rt.world, partners=task_augment is not None,
                                        batches_per_task=per_task), **rt.loader_kwargs)

    def draw_task() -> dict | list[dict]:
        task = [rt.batch(next(batches)) for _ in range(per_task)]
        return task if settings.inner_batches == "fresh" else task[0]

    stats: dict[str, float] = {}
    skipped = 0
    for step in run.steps():
        tasks = [draw_task() for _ in range(per_rank)]
        partners = [rt.batch(next(batches)) for _ in range(per_rank)] if task_augment else None
        # Every task draws from its own stream, seeded from its global index: its augmentations do not depend on
        # which rank runs it or on how many tasks ran before it in the same process.
        generators = [task_generator(seed, step * per_step + rt.rank * per_rank + i) for i in range(per_rank)]
        stats = reptile.meta_step(tasks, partners, generators)  # losses and update norm are over all ranks' tasks
        if stats.get("skipped"):
            skipped += 1
            print(f"meta_init {variant}: step {step}: non-finite loss, step skipped "
                  f"({skipped} so far; meta.settings.skip_nonfinite_steps)", flush=True)
        else:
            run.check_finite(stats["loss_last"], step)
        run.log(step, stats, stats["loss_last"])
    info = {"stage": "meta_init", "variant": variant, "inner_steps": settings.inner_steps,
            "tasks_per_step": settings.tasks_per_step}
    return run.finish(info, stats)
