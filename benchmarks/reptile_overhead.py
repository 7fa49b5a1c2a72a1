"""Cost of one Reptile meta step (L inner steps, one task) relative to L plain SGD steps.

The target is a ratio of at most ~1.05: the meta machinery (copy meta -> inner, delta accumulation,
outer step, buffer carry-back) must be negligible next to the forward/backward passes.

    python -m benchmarks.reptile_overhead --encoder convnext_atto --inner-steps 4 --threads 1

On small shared CPU machines, multi-threaded intra-op timings of small convs swing by up to 10x from
run to run; --threads 1 makes the ratio measurable there. `metadepth bench` runs the same measurement
(`measure_overhead`) on the model of params.yaml.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import bench_device, median_times
from models.losses import depth_loss
from models.network import DepthNet
from models.reptile import Reptile

TARGET_RATIO = 1.05


def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return depth_loss(model(batch["rgb"]), batch["depth"])


def random_batch(batch_size: int, height: int, width: int, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Random images and depths in the indoor range: timing does not depend on the pixel values."""
    return {
        "rgb": torch.rand(batch_size, 3, height, width, device=device),
        "depth": 0.5 + 5 * torch.rand(batch_size, 1, height, width, device=device),
    }


def measure_overhead(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    inner_steps: int,
    *,
    loss: Callable[[torch.nn.Module, Any], torch.Tensor] = loss_fn,
    repeats: int = 20,
    warmup: int = 2,
    lr: float = 1e-3,
) -> dict[str, Any]:
    """Median time of L plain SGD steps and of one meta step with L inner steps, on the same model and batch.

    The two are alternated so slow drifts of the machine (thermal, other load) hit both alike; medians discard
    the occasional stall. The model is trained in place by both (its values do not matter for timing).
    """
    sgd = torch.optim.SGD(model.parameters(), lr=lr)

    def plain_sgd() -> None:
        for _ in range(inner_steps):
            sgd.zero_grad(set_to_none=True)
            loss(model, batch).backward()
            sgd.step()

    reptile = Reptile(model, loss, inner_lr=lr, inner_steps=inner_steps, outer_lr=0.1)
    t = median_times({"sgd": plain_sgd, "meta": lambda: reptile.meta_step([batch])}, repeats, warmup)
    r = t["meta"] / t["sgd"]
    return {"inner_steps": inner_steps, "batch_size": int(batch["rgb"].shape[0]),
            "resolution": list(batch["rgb"].shape[-2:]), "repeats": repeats,
            "plain_sgd_ms": round(t["sgd"] * 1e3, 2), "meta_step_ms": round(t["meta"] * 1e3, 2),
            "ratio_meta_over_sgd": round(r, 4), "target_ratio": TARGET_RATIO, "within_target": r <= TARGET_RATIO}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="convnext_atto")
    parser.add_argument("--inner-steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=0, help="intra-op CPU threads (0: torch default); 1 gives stable timings"
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = DepthNet(args.encoder).to(device)
    batch = random_batch(args.batch_size, args.height, args.width, device)
    out = measure_overhead(model, batch, args.inner_steps, repeats=args.repeats, warmup=args.warmup)
    print(
        f"device={device} encoder={args.encoder} L={args.inner_steps} batch={args.batch_size} "
        f"size={args.height}x{args.width} threads={torch.get_num_threads()}"
    )
    print(f"{args.inner_steps} plain SGD steps: {out['plain_sgd_ms']:.1f} ms")
    print(f"1 meta step ({args.inner_steps} inner steps): {out['meta_step_ms']:.1f} ms")
    print(f"ratio meta/plain: {out['ratio_meta_over_sgd']:.3f}")


def bench(cfg: Any) -> dict[str, Any]:
    """`metadepth bench` section: the model, inner steps and task batch of params.yaml (meta section)."""
    from tasks.checkpoints import build_model
    from tasks.training import loss_fn_for

    p = cfg.params
    device = bench_device(p)
    torch.manual_seed(p.data.seed)
    model = build_model(p.model.model_dump()).to(device)
    batch = random_batch(p.meta.settings.batch_size, p.data.height, p.data.width, device)
    out = measure_overhead(model, batch, p.meta.settings.inner_steps, loss=loss_fn_for(p.loss),
                           repeats=cfg.size(15, 2), warmup=cfg.size(2, 1), lr=p.meta.settings.inner_lr)
    return {"encoder": p.model.encoder, "device": str(device), **out}


if __name__ == "__main__":
    main()
