"""The evaluate stage: one checkpoint on one dataset's test split, the eight standard depth metrics.

Aggregation is the standard one (monodepth2, and the paper): metrics are computed per image over its valid pixels,
then averaged over images. The protocol (caps, crop, alignment) is written next to the numbers so a metrics file
is never read without knowing how it was made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.metrics import depth_metrics
from tasks.checkpoints import model_from_checkpoint
from tasks.io import MetadepthError, atomic_write
from tasks.layout import Layout, training_seed
from tasks.params import Params
from tasks.preprocess.shards import ShardDataset, shard_path
from tasks.runtime import Runtime

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "a1", "a2", "a3")


@torch.no_grad()
def predict_full_res(model: torch.nn.Module, rgb: torch.Tensor) -> torch.Tensor:
    """Scale-0 prediction; the network's scale 0 is at input resolution."""
    return model(rgb)[0]


def run_evaluate(params: Params, root: Path, model_name: str, dataset: str, seed: int | None = None) -> dict[str, Any]:
    """Evaluate one checkpoint on one dataset's test split and write its metrics file.

    Memory stays bounded however many of these run in one process (the pipeline runs the model x dataset fan-out
    as threads of one process): the data streams in batches of evaluate.batch_size, only a few numbers per image
    are kept, and the model and the shard's file handle are released when the call returns
    (tests/test_eval_memory.py).
    """
    ev = params.evaluate
    proto = ev.protocol(dataset)
    seed = training_seed(params, seed)
    layout = Layout(root, seed)
    rt = Runtime.from_params(params.runtime)
    device = rt.device
    model, payload = model_from_checkpoint(layout.checkpoint(model_name))
    model.to(device).eval()
    net = rt.compile(model)
    protocol = {"min_depth": proto.min_depth, "max_depth": proto.max_depth, "crop": proto.crop, "align": proto.align,
                "aggregation": "mean over images of per-image metrics on valid pixels",
                "split": "test"}
    per_image: list[dict[str, float]] = []
    with ShardDataset(shard_path(layout.prepared / dataset, "test")) as data:
        loader = torch.utils.data.DataLoader(data, batch_size=ev.batch_size, **rt.loader_kwargs)
        for batch in loader:
            pred = predict_full_res(net, batch["rgb"].to(device)).float().cpu().numpy()[:, 0]
            gt = batch["depth"].numpy()[:, 0]
            for i in range(gt.shape[0]):
                m = depth_metrics(pred[i], gt[i], min_depth=proto.min_depth, max_depth=proto.max_depth,
                                  crop=None if proto.crop == "none" else proto.crop,
                                  align=None if proto.align == "none" else proto.align)
                if m.get("n_valid", 0) > 0:
                    per_image.append(m)
    if not per_image:
        caps = f"[{proto.min_depth}, {proto.max_depth}] m"
        raise MetadepthError(f"{dataset}: no test image has valid depth inside {caps}; "
                             "check evaluate.min_depth/max_depth/per_dataset")
    result = {
        "model": model_name,
        "dataset": dataset,
        "seed": seed,
        "metrics": {k: float(np.mean([m[k] for m in per_image])) for k in METRICS},
        "n_images": len(per_image),
        "n_valid_pixels": int(sum(m["n_valid"] for m in per_image)),
        "protocol": protocol,
        "checkpoint_step": payload["step"],
        "per_image_rmse": [round(float(m["rmse"]), 6) for m in per_image],
    }
    out = layout.metrics_file(model_name, dataset)
    with atomic_write(out) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return result
