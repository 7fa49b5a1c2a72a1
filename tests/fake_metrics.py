"""Metrics files of schema 2 (docs/contracts.md) made by hand, so the report is tested without training anything."""

from __future__ import annotations

import json
from pathlib import Path

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "a1", "a2", "a3")


def metrics_file(model: str, dataset: str, seed: int, rmse: dict[str, float]) -> dict:
    """One file: protocol -> RMSE; the other metrics follow from the RMSE so tests can predict them."""
    protocols = {}
    for name, value in rmse.items():
        metrics = {k: value / 10 for k in METRICS} | {"rmse": value, "a1": 1 - value / 10}
        protocols[name] = {"metrics": metrics, "n_valid_pixels": 100, "per_image_rmse": [value] * 4,
                           "protocol": {"min_depth": 0.001, "max_depth": 10.0, "crop": "none",
                                        "align": "none" if name == "metric" else name,
                                        "aggregation": "mean over images of per-image metrics on valid pixels",
                                        "split": "test"}}
    return {"schema_version": 2, "model": model, "dataset": dataset, "seed": seed, "checkpoint_step": 3,
            "n_images": 4, "protocols": protocols}


def write_metrics(root: Path, rmse: dict[str, dict[str, list[float]]], median_factor: float = 0.5) -> None:
    """rmse: model -> dataset -> one metric-protocol RMSE per seed (seeds 0, 1, ...); the median protocol's RMSE is
    `median_factor` times it."""
    for model, per_ds in rmse.items():
        for dataset, values in per_ds.items():
            for seed, value in enumerate(values):
                f = root / "data" / "metrics" / f"seed{seed}" / f"{model}__{dataset}.json"
                f.parent.mkdir(parents=True, exist_ok=True)
                record = metrics_file(model, dataset, seed, {"metric": value, "median": value * median_factor})
                f.write_text(json.dumps(record))
