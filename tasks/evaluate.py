"""The evaluate stage: every model of every training seed on every dataset's test split, under every protocol.

One process for the whole fan-out (docs/performance.md: a process per (model, dataset) cost ~30 s of start-up for
~0.1 s of work), still one metrics file per (model, dataset, seed) as docs/contracts.md defines. Aggregation is the
standard one (monodepth2, and the paper): metrics per image over its valid pixels, then the mean over images. The
protocol (caps, crop, alignment) is written next to the numbers so a metrics file is never read without it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.metrics import depth_metrics
from tasks.checkpoints import model_from_checkpoint
from tasks.io import MetadepthError, atomic_write
from tasks.layout import Layout, training_seed
from tasks.params import Params, ProtocolParams
from tasks.preprocess.shards import ShardDataset, shard_path
from tasks.runtime import Runtime

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "a1", "a2", "a3")
SCHEMA_VERSION = 2
CONSTANT = "constant"  # a model without a checkpoint: the training split's median depth at every pixel

Predictor = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) rgb -> (B, 1, H, W) depth


@dataclass
class EvaluationResult:
    files: list[str]  # the metrics files written, relative to the project root


def train_median_depth(params: Params, root: Path) -> float:
    """The median valid depth of the training split: the constant predictor every model should beat."""
    with ShardDataset(shard_path(Layout(root).prepared / params.train_domain, "train")) as data:
        depths = np.concatenate([data[i]["depth"].numpy().ravel() for i in range(len(data))])
    return float(np.median(depths[depths > 0]))


def _protocol_record(proto: ProtocolParams, align: str) -> dict[str, Any]:
    return {"min_depth": proto.min_depth, "max_depth": proto.max_depth, "crop": proto.crop, "align": align,
            "aggregation": "mean over images of per-image metrics on valid pixels", "split": "test"}


def _per_image(predict: Predictor, data: ShardDataset, params: Params, rt: Runtime, proto: ProtocolParams,
               alignments: dict[str, str]) -> Iterator[dict[str, dict[str, float]]]:
    """Per test image: protocol name -> that image's metrics (skipping images with no valid pixel)."""
    loader = torch.utils.data.DataLoader(data, batch_size=params.evaluate.batch_size, **rt.loader_kwargs)
    for batch in loader:
        with torch.no_grad():
            pred = predict(batch["rgb"].to(rt.device)).float().cpu().numpy()[:, 0]
        gt = batch["depth"].numpy()[:, 0]
        for i in range(gt.shape[0]):
            image = {name: depth_metrics(pred[i], gt[i], min_depth=proto.min_depth, max_depth=proto.max_depth,
                                         crop=None if proto.crop == "none" else proto.crop,
                                         align=None if align == "none" else align)
                     for name, align in alignments.items()}
            if all(m.get("n_valid", 0) > 0 for m in image.values()):
                yield image


def evaluate_predictor(predict: Predictor, params: Params, root: Path, dataset: str, rt: Runtime) -> dict[str, Any]:
    """Every protocol of evaluate.protocols for one predictor on one dataset's test split (streamed in batches)."""
    proto = params.evaluate.protocol(dataset)
    alignments = params.evaluate.protocols
    with ShardDataset(shard_path(Layout(root).prepared / dataset, "test")) as data:
        images = list(_per_image(predict, data, params, rt, proto, alignments))
    if not images:
        caps = f"[{proto.min_depth}, {proto.max_depth}] m"
        raise MetadepthError(f"{dataset}: no test image has valid depth inside {caps}; "
                             "check evaluate.min_depth/max_depth/per_dataset")
    return {"n_images": len(images), "protocols": {name: {
        "metrics": {k: float(np.mean([im[name][k] for im in images])) for k in METRICS},
        "n_valid_pixels": int(sum(im[name]["n_valid"] for im in images)),
        "per_image_rmse": [round(float(im[name]["rmse"]), 6) for im in images],
        "protocol": _protocol_record(proto, align)} for name, align in alignments.items()}}


def _predictor(params: Params, root: Path, model_name: str, seed: int, rt: Runtime) -> tuple[Predictor, int]:
    """(rgb -> depth, the checkpoint's training step) for a checkpoint or the constant predictor."""
    if model_name == CONSTANT:
        median = train_median_depth(params, root)
        return (lambda rgb: torch.full((rgb.shape[0], 1, *rgb.shape[-2:]), median)), 0
    model, payload = model_from_checkpoint(Layout(root, seed).checkpoint(model_name))
    net = rt.compile(model.to(rt.device).eval())
    return (lambda rgb: net(rgb)[0]), payload["step"]  # scale 0 is at input resolution


def run_evaluate(params: Params, root: Path, model_name: str, dataset: str, seed: int | None = None,
                 runtime: Runtime | None = None) -> dict[str, Any]:
    """Evaluate one model of one seed on one dataset and write its metrics file; returns the file's content.

    Memory stays bounded however many of these run in one process: the data streams in batches, only a few
    numbers per image are kept, and the model and the shard's file handle are released on return
    (tests/test_eval_memory.py).
    """
    seed = training_seed(params, seed)
    rt = runtime or Runtime.from_params(params.runtime)
    predict, step = _predictor(params, root, model_name, seed, rt)
    result = {"schema_version": SCHEMA_VERSION, "model": model_name, "dataset": dataset, "seed": seed,
              "checkpoint_step": step, **evaluate_predictor(predict, params, root, dataset, rt)}
    with atomic_write(Layout(root, seed).metrics_file(model_name, dataset)) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return result


def metrics_files(params: Params, root: Path) -> list[Path]:
    """The metrics file of every evaluate.models x domains x seeds: what the evaluate stage writes."""
    return [Layout(root, s).metrics_file(m, d) for s in params.seeds for m in params.evaluate.models
            for d in params.domains]


def run_evaluate_all(params: Params, root: Path) -> EvaluationResult:
    """The evaluate stage: evaluate.models x domains x seeds, one metrics file each."""
    rt = Runtime.from_params(params.runtime)
    for seed in params.seeds:
        for model_name in params.evaluate.models:
            for dataset in params.domains:
                run_evaluate(params, root, model_name, dataset, seed, runtime=rt)
        print(f"evaluate: seed {seed}: {len(params.evaluate.models)} models x {len(params.domains)} datasets",
              flush=True)
    return EvaluationResult(files=[str(p.relative_to(root)) for p in metrics_files(params, root)])
