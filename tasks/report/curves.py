"""Every training curve of every seed in one long table: the report's curve figure and reports/curves.csv (which
dvc.yaml's `plots:` reads, so DVC covers every seed and variant without a hand-written list of files)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.layout import Layout
from tasks.params import Params

COLUMNS = ["model", "seed", "step", "series", "value"]


def curve_names(params: Params) -> list[str]:
    """The training stages' curve files: meta variants, direct supervised learning (when run), the fine-tunings."""
    return [*params.meta.variants, "sup", *(f"ft_{start}" for start in params.finetune.starts)]


def load_curves(params: Params, root: Path) -> pd.DataFrame:
    """model, seed, step, series (a CSV column: loss, val_loss, grad_norm, ...), value; empty cells are dropped, so
    `val_loss` has rows only at validation steps. Old CSVs without val_loss/grad_norm simply lack those series."""
    frames = []
    for seed in params.seeds:
        for name in curve_names(params):
            f = Layout(root, seed).curve(name)
            if f.is_file():
                long = pd.read_csv(f).melt(id_vars="step", var_name="series", value_name="value").dropna()
                frames.append(long.assign(model=name, seed=seed))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)[COLUMNS]
