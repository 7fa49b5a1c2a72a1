"""Evaluation and prediction throughput (images/s) at the params.yaml resolution, through the real stage code.

evaluate: `tasks.evaluate.run_evaluate` on a test shard in a scratch project folder, with a checkpoint of the
params.yaml model (random weights: speed does not depend on them). It includes loading the checkpoint and the
per-image metrics, i.e. what one evaluate stage costs beyond process start-up.
predict: `tasks.predict.predict_paths` on a folder of PNG files of the same frames, writing .npy + .png per image
(no point cloud), at the CLI's default batch size: decoding, the network and the writes together.
"""

from __future__ import annotations

import statistics
from typing import Any

import cv2
import torch

from benchmarks.common import BenchConfig, bench_device, ratio, timed
from benchmarks.loader import write_shard

PREDICT_BATCH = 4  # `metadepth predict` default


def bench(cfg: BenchConfig) -> dict[str, Any]:
    """Images/s of the evaluate stage's body and of `metadepth predict`, on the same frames and model."""
    from tasks.checkpoints import build_model, save_checkpoint
    from tasks.evaluate import run_evaluate
    from tasks.layout import Layout
    from tasks.predict import predict_paths

    p = cfg.params
    root = cfg.workdir / "inference"
    n = cfg.size(p.data.test_size, 16)
    frames = {k: v[:n] for k, v in cfg.frames().items()}
    n = len(frames["depth"])
    (root / "data" / "prepared" / "bench").mkdir(parents=True, exist_ok=True)
    write_shard(root / "data" / "prepared" / "bench" / "test.h5", frames, p, split="test")
    torch.manual_seed(p.data.seed)
    checkpoint = Layout(root, p.seeds[0]).checkpoints / "bench.pt"  # where run_evaluate looks for it
    model_params = p.model.model_dump()
    save_checkpoint(checkpoint, build_model(model_params), model_params, step=0, data_hash="bench")
    images = root / "images"
    images.mkdir()
    for i, rgb in enumerate(frames["rgb"]):
        cv2.imwrite(str(images / f"{i:05d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def evaluate() -> None:
        run_evaluate(p, root, "bench", "bench")

    def predict() -> None:
        predict_paths(checkpoint, [images], root / "predictions", batch_size=PREDICT_BATCH, device="auto")

    evaluate(), predict()  # warm-up: first-call allocations, lazy imports
    device = bench_device(p)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: dict[str, list[float]] = {"evaluate": [], "predict": []}
    for _ in range(cfg.size(3, 1)):
        times["evaluate"].append(timed(evaluate))
        times["predict"].append(timed(predict))
    t = {k: statistics.median(v) for k, v in times.items()}
    return {"resolution": [p.data.height, p.data.width], "encoder": p.model.encoder, "images": n,
            "evaluate_batch_size": p.evaluate.batch_size, "predict_batch_size": PREDICT_BATCH,
            "evaluate_images_per_s": round(n / t["evaluate"], 1), "predict_images_per_s": round(n / t["predict"], 1),
            "evaluate_over_predict": round(ratio(t["predict"], t["evaluate"]), 2), "device": str(device),
            "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20)
            if device.type == "cuda" else None}
