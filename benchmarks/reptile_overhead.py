"""Cost of one Reptile meta step (L inner steps, one task) relative to L plain SGD steps.

The target is a ratio of at most ~1.05: the meta machinery (copy meta -> inner, delta accumulation,
outer step, buffer carry-back) must be negligible next to the forward/backward passes.

    python -m benchmarks.reptile_overhead --encoder convnext_atto --inner-steps 4 --threads 1

On small shared CPU machines, multi-threaded intra-op timings of small convs swing by up to 10x from
run to run; --threads 1 makes the ratio measurable there.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from models.losses import depth_loss
from models.network import DepthNet
from models.reptile import Reptile


def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return depth_loss(model(batch["rgb"]), batch["depth"])


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


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
    batch = {
        "rgb": torch.rand(args.batch_size, 3, args.height, args.width, device=device),
        "depth": 0.5 + 5 * torch.rand(args.batch_size, 1, args.height, args.width, device=device),
    }
    lr = 1e-3

    sgd = torch.optim.SGD(model.parameters(), lr=lr)

    def plain_sgd() -> None:
        for _ in range(args.inner_steps):
            sgd.zero_grad(set_to_none=True)
            loss_fn(model, batch).backward()
            sgd.step()

    reptile = Reptile(model, loss_fn, inner_lr=lr, inner_steps=args.inner_steps, outer_lr=0.1)

    def meta_step() -> None:
        reptile.meta_step([batch])

    for _ in range(args.warmup):
        plain_sgd()
        meta_step()
    # Alternate the two so slow drifts of the machine (thermal, other load) hit both alike; medians
    # discard the occasional stall.
    sgd_times, meta_times = [], []
    for _ in range(args.repeats):
        sgd_times.append(timed(plain_sgd))
        meta_times.append(timed(meta_step))
    t_sgd, t_meta = statistics.median(sgd_times), statistics.median(meta_times)
    print(
        f"device={device} encoder={args.encoder} L={args.inner_steps} batch={args.batch_size} "
        f"size={args.height}x{args.width} threads={torch.get_num_threads()}"
    )
    print(f"{args.inner_steps} plain SGD steps: {t_sgd * 1e3:.1f} ms")
    print(f"1 meta step ({args.inner_steps} inner steps): {t_meta * 1e3:.1f} ms")
    print(f"ratio meta/plain: {t_meta / t_sgd:.3f}")


if __name__ == "__main__":
    main()
