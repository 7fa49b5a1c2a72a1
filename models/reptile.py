"""Batched first-order Reptile (Nichol et al. 2018) for any nn.Module, in the style of openai/supervised-reptile.

The paper treats every RGB-D mini-batch as a task ("fine-grained task"). One meta step, per task:

    inner <- meta weights (and buffers)
    repeat inner_steps: inner <- inner - inner_lr * grad loss(inner, augment(task_batch))
    [optional] one more step on task_augment(inner, task_batch, partner_batch)
    delta_task = meta - inner

then meta.grad = mean_task(delta_task) and the outer optimizer steps (SGD by default: meta moves
outer_lr of the way towards the mean adapted weights).

Differences from the paper's published snippet, which are bugs there and the spec here:
* the inner loop trains on the SAME task batch for all steps (the snippet drew a new batch per step,
  which makes Reptile plain SGD with a lookahead, not adaptation to a task);
* gradient clipping, when asked for, happens after each backward (the snippet clipped once before any
  gradient existed, a no-op; `clip="value"` with 1.0 is what it meant to do);
* no deepcopy per task and no optimizer state shared across tasks: one inner model is allocated once
  and meta weights are copied into it in place, and the inner optimizer is plain stateless SGD;
* BatchNorm running statistics learnt in the inner loop are carried back into the meta model.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

LossFn = Callable[[nn.Module, Any], Tensor]
InnerAugment = Callable[[Any, torch.Generator], Any]
TaskAugment = Callable[[nn.Module, Any, Any, torch.Generator], Tensor]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce_sum_(tensors: list[Tensor]) -> None:
    """Sum tensors across ranks in place with a single collective (one flat buffer, not one call each)."""
    flat = torch.cat([t.reshape(-1).to(torch.float32) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


class Reptile:
    """Meta-learns the initialisation of `model` in place; see the module docstring for the update.

    Build it after moving `model` to its device. `model` itself is the meta model: save/evaluate it as
    usual; `state_dict()` here only holds what is needed on top of it to resume (outer optimizer, step
    counter, generator state).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        inner_lr: float = 1e-3,
        inner_steps: int = 4,
        outer_lr: float = 0.1,
        outer_optimizer: str = "sgd",
        outer_lr_final: float | None = None,
        total_steps: int | None = None,
        clip: str = "none",
        clip_max: float = 1.0,
        inner_augment: InnerAugment | None = None,
        task_augment: TaskAugment | None = None,
        generator: torch.Generator | None = None,
        skip_nonfinite: bool = False,
        forward_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ):
        if inner_steps < 1:
            raise ValueError(f"inner_steps must be >= 1, got {inner_steps}")
        if outer_lr_final is not None and not total_steps:
            raise ValueError("outer_lr_final (annealing) needs total_steps")
        self.model = model
        self.loss_fn = loss_fn
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.outer_lr = outer_lr
        self.outer_lr_final = outer_lr_final
        self.total_steps = total_steps
        if clip not in ("none", "value", "norm"):
            raise ValueError(f"clip must be 'none', 'value' or 'norm', got {clip!r}")
        self.clip, self.clip_max = clip, clip_max
        self.inner_augment = inner_augment
        self.task_augment = task_augment
        if generator is None:
            # Follows torch.manual_seed, so a globally seeded run stays reproducible.
            generator = torch.Generator().manual_seed(torch.initial_seed())
        self.generator = generator
        # Wraps every forward + loss (e.g. autocast); the updates themselves always run in float32.
        self.forward_context = forward_context
        # A NaN/inf in any task's loss or delta would poison the mean delta: with this set the whole outer step
        # is skipped (weights, buffers and optimizer state untouched) and reported, instead of applied.
        self.skip_nonfinite = skip_nonfinite
        self.step = 0

        # The one inner model, reused for every task of every meta step.
        self.inner_model = copy.deepcopy(model)
        trainable = [p.requires_grad for p in model.parameters()]
        self.meta_params = [p for p, t in zip(model.parameters(), trainable, strict=True) if t]
        if not self.meta_params:
            raise ValueError("model has no trainable parameters")
        self.inner_params = [p for p, t in zip(self.inner_model.parameters(), trainable, strict=True) if t]
        # Everything copied meta -> inner at the start of a task (frozen parameters and buffers included).
        self.meta_state = list(model.parameters()) + list(model.buffers())
        self.inner_state = list(self.inner_model.parameters()) + list(self.inner_model.buffers())
        # Float buffers (BN running mean/var) are averaged over tasks; integer ones (BN step counters)
        # advance identically in every task, so the last task's value is taken.
        self.meta_float_buffers = [b for b in model.buffers() if b.is_floating_point()]
        self.inner_float_buffers = [b for b in self.inner_model.buffers() if b.is_floating_point()]
        self.meta_int_buffers = [b for b in model.buffers() if not b.is_floating_point()]
        self.inner_int_buffers = [b for b in self.inner_model.buffers() if not b.is_floating_point()]
        self._delta_sum = [torch.zeros_like(p) for p in self.meta_params]
        self._buffer_sum = [torch.zeros_like(b) for b in self.meta_float_buffers]

        if outer_optimizer == "sgd":
            self.outer_optimizer: torch.optim.Optimizer = torch.optim.SGD(self.meta_params, lr=outer_lr)
        elif outer_optimizer == "adam":
            self.outer_optimizer = torch.optim.Adam(self.meta_params, lr=outer_lr)
        else:
            raise ValueError(f"outer_optimizer must be 'sgd' or 'adam', got {outer_optimizer!r}")

    def outer_lr_at(self, step: int) -> float:
        """Outer step size, linearly annealed to outer_lr_final over total_steps (supervised-reptile)."""
        if self.outer_lr_final is None:
            return self.outer_lr
        frac = min(step / self.total_steps, 1.0)
        return (1.0 - frac) * self.outer_lr + frac * self.outer_lr_final

    def _inner_update(self, loss: Tensor) -> Tensor:
        """One plain SGD step of the inner model on `loss`; returns the gradient norm before clipping.

        Stateless SGD: nothing can leak from one task to the next. Clipping sits between backward and
        the update, the only place where it has a gradient to act on.
        """
        self.inner_model.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.inner_params if p.grad is not None]
        if not params:  # foreach ops reject empty lists
            return torch.zeros(())
        grads = [p.grad for p in params]
        norm = torch.nn.utils.get_total_norm(grads)
        with torch.no_grad():
            if self.clip == "norm":
                torch.nn.utils.clip_grads_with_norm_(params, self.clip_max, norm)
            elif self.clip == "value":
                torch._foreach_clamp_min_(grads, -self.clip_max)
                torch._foreach_clamp_max_(grads, self.clip_max)
            torch._foreach_add_(params, grads, alpha=-self.inner_lr)
        return norm.detach()

    def _adapt(self, task: Any, partner: Any | None,
               generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """Adapt the inner model to one task, starting from the meta weights, drawing from `generator`.

        `task` is one batch (every inner step trains on it, freshly augmented: the paper's text) or a list of
        inner_steps batches (step i trains on batch i: the paper's released snippet). Returns the losses of the
        first and last inner steps, the task-augmentation loss (or None) and the mean pre-clip gradient norm.
        """
        batches = task if isinstance(task, list | tuple) else [task] * self.inner_steps
        if len(batches) != self.inner_steps:
            raise ValueError(f"a task of {len(batches)} batches for {self.inner_steps} inner steps")
        with torch.no_grad():
            torch._foreach_copy_(self.inner_state, self.meta_state)
        losses, norms = [], []
        for batch in batches:
            inputs = batch if self.inner_augment is None else self.inner_augment(batch, generator)
            with self.forward_context():
                loss = self.loss_fn(self.inner_model, inputs)
            norms.append(self._inner_update(loss))
            losses.append(loss.detach())
        batch = batches[-1]
        aug_loss = None
        if self.task_augment is not None:
            # Our reading of the paper's task augmentation: after the L ordinary inner steps, one more
            # inner step on an augmented task built from this task and a partner task (mix-up of the
            # two, channel shuffle at the encoder bottleneck). It changes where the inner trajectory
            # ends, hence the Reptile direction, without changing the per-task inner loop itself.
            with self.forward_context():
                loss = self.task_augment(self.inner_model, batch, partner, generator)
            norms.append(self._inner_update(loss))
            aug_loss = loss.detach()
        return losses[0], losses[-1], aug_loss, torch.stack(norms).mean()

    def meta_step(self, tasks: Sequence[Any], partners: Sequence[Any] | None = None,
                  generators: Sequence[torch.Generator] | None = None) -> dict[str, float]:
        """One outer update from `tasks` (each one mini-batch); returns mean losses and the step size.

        `partners[i]` is task i's partner for task augmentation; when omitted, task i is paired with task
        i + 1 (cyclically), which needs at least two tasks. `generators[i]` is task i's random stream for
        its augmentations (default: all tasks draw in turn from the Reptile's own generator); a stream per
        task makes a task's draws independent of which process runs it and of the tasks before it. Under
        torch.distributed every rank passes its own tasks and all ranks end with identical meta weights.
        """
        if len(tasks) == 0:
            raise ValueError("meta_step needs at least one task")
        if self.task_augment is not None and partners is None:
            if len(tasks) < 2:
                raise ValueError("task_augment needs partners, or at least two tasks to pair up")
            partners = list(tasks[1:]) + [tasks[0]]
        if partners is not None and len(partners) != len(tasks):
            raise ValueError(f"got {len(partners)} partners for {len(tasks)} tasks")
        if generators is not None and len(generators) != len(tasks):
            raise ValueError(f"got {len(generators)} generators for {len(tasks)} tasks")

        if self.inner_params[0].device != self.meta_params[0].device:
            self.inner_model.to(self.meta_params[0].device)  # model was moved after construction
        self.inner_model.train()
        torch._foreach_zero_(self._delta_sum)
        if self._buffer_sum:  # foreach ops reject empty lists
            torch._foreach_zero_(self._buffer_sum)
        zero = torch.zeros((), device=self.meta_params[0].device)
        loss_first, loss_last, loss_aug, grad_norm = zero.clone(), zero.clone(), zero.clone(), zero.clone()

        for i, batch in enumerate(tasks):
            first, last, aug, norm = self._adapt(batch, None if partners is None else partners[i],
                                                 self.generator if generators is None else generators[i])
            with torch.no_grad():
                # delta_sum += meta - inner, in place: the inner weights are overwritten by the next
                # task's copy anyway, and avoiding a model-sized temporary per task matters on CPU.
                # Summing deltas rather than weights keeps float32 precision (deltas are small).
                torch._foreach_sub_(self.inner_params, self.meta_params)
                torch._foreach_sub_(self._delta_sum, self.inner_params)
                if self._buffer_sum:
                    torch._foreach_add_(self._buffer_sum, self.inner_float_buffers)
            loss_first += first.to(zero)
            loss_last += last.to(zero)
            if aug is not None:
                loss_aug += aug.to(zero)
            grad_norm += norm.to(zero)

        totals = torch.stack([torch.tensor(float(len(tasks)), device=zero.device), loss_first, loss_last, loss_aug,
                              grad_norm])
        if _distributed():
            _all_reduce_sum_(self._delta_sum + self._buffer_sum + [totals])
        num_tasks = totals[0]

        lr = self.outer_lr_at(self.step)
        for group in self.outer_optimizer.param_groups:
            group["lr"] = lr
        with torch.no_grad():
            # grad = meta - mean(inner): SGD with lr 1 lands exactly on the mean adapted weights.
            torch._foreach_div_(self._delta_sum, num_tasks)
            update_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(self._delta_sum)))
            if self.skip_nonfinite and not bool(torch.isfinite(torch.cat([update_norm.view(1), totals])).all()):
                self.step += 1
                return {"loss_first": float("nan"), "loss_last": float("nan"), "outer_lr": lr,
                        "update_norm": float("nan"), "num_tasks": int(num_tasks.item()), "skipped": 1}
            for p, g in zip(self.meta_params, self._delta_sum, strict=True):
                p.grad = g
            self.outer_optimizer.step()
            for p in self.meta_params:
                p.grad = None
            if self._buffer_sum:
                torch._foreach_div_(self._buffer_sum, num_tasks)
                torch._foreach_copy_(self.meta_float_buffers, self._buffer_sum)
            if self.meta_int_buffers:
                torch._foreach_copy_(self.meta_int_buffers, self.inner_int_buffers)
        self.step += 1

        stats = {
            "loss_first": (totals[1] / num_tasks).item(),
            "loss_last": (totals[2] / num_tasks).item(),
            "outer_lr": lr,
            "update_norm": update_norm.item(),
            "grad_norm": (totals[4] / num_tasks).item(),  # mean inner gradient norm before clipping
            "num_tasks": int(num_tasks.item()),
        }
        if self.task_augment is not None:
            stats["loss_task_augment"] = (totals[3] / num_tasks).item()
        return stats

    def state_dict(self) -> dict[str, Any]:
        """Outer optimizer state, step counter and generator state: with the model's weights, a resume point."""
        return {
            "step": self.step,
            "outer_optimizer": self.outer_optimizer.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.outer_optimizer.load_state_dict(state["outer_optimizer"])
        self.generator.set_state(state["generator"])
