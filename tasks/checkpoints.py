"""Checkpoints as docs/contracts.md defines them: weights, the model's parameters, step and a training-data hash.

They contain only tensors and plain values so they load with `weights_only=True`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.network import DepthNet
from tasks.io import MetadepthError, atomic_write

CHECKPOINT_FORMAT = "metadepth-checkpoint"
CHECKPOINT_VERSION = 1


def build_model(model_params: dict[str, Any], pretrained_path: str | None = None) -> DepthNet:
    """The network from its checkpoint-stored parameters; encoder weights from a local file only at init."""
    p = dict(model_params)
    return DepthNet(encoder=p["encoder"], pretrained_path=pretrained_path,
                    decoder_channels=tuple(p["decoder_channels"]), scales=tuple(p["scales"]),
                    min_depth=p["min_depth"], max_depth=p["max_depth"],
                    encoder_levels=p.get("encoder_levels"))  # absent from checkpoints before the knob


def save_checkpoint(path: Path, model: torch.nn.Module, model_params: dict[str, Any], *, step: int,
                    data_hash: str, info: dict[str, Any] | None = None) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_params": model_params,
        "step": step,
        "data_hash": data_hash,
        "info": info or {},
    }
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MetadepthError(f"{path}: checkpoint not found; run the stage that produces it (see dvc.yaml)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors for the same user problem
        raise MetadepthError(f"{path}: not a loadable checkpoint ({type(err).__name__}); it is corrupt or "
                             "not from metadepth, re-run the stage that produces it") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise MetadepthError(f"{path}: not a metadepth checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    return payload


def model_from_checkpoint(path: Path) -> tuple[DepthNet, dict[str, Any]]:
    payload = load_checkpoint(path)
    model = build_model(payload["model_params"])
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise MetadepthError(f"{path}: weights do not fit the stored model parameters ({str(err)[:200]})") from None
    return model, payload
