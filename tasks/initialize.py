"""The init stage: the random initialisation (from the seed, or a local pretrained encoder file) as a checkpoint.

It is a checkpoint of its own so the meta-learning stage and the scratch baseline provably start from the same
weights: the comparison the paper's headline number rests on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.common import build_model, paths, save_checkpoint, seed_everything
from tasks.params import Params


def run_init(params: Params, root: Path) -> dict[str, Any]:
    seed_everything(params.seed)
    model = build_model(params.model.model_dump())
    out = paths(root)["checkpoints"] / "init.pt"
    save_checkpoint(out, model, params.model.model_dump(), step=0, data_hash="",
                    info={"stage": "init", "seed": params.seed})
    return {"checkpoint": str(out.relative_to(root)), "parameters": sum(p.numel() for p in model.parameters())}
