"""The report's figures as PNG bytes: the curves, RMSE bars per protocol, and the qualitative grid.

Figures are built with matplotlib's object API (`matplotlib.figure.Figure`), which needs no pyplot and no backend
choice, so nothing here depends on a display or on import order.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tasks.checkpoints import model_from_checkpoint
from tasks.layout import Layout
from tasks.params import Params
from tasks.preprocess.shards import ShardDataset, shard_path
from tasks.report.table import Table, label

COLORS = matplotlib.colormaps["tab10"].colors


def png(fig: Figure, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def curves_png(curves: pd.DataFrame, params: Params) -> bytes | None:
    """Reptile's inner-loop losses, the supervised stages' losses, and the gradient norm before clipping.

    Every seed is drawn, one line per seed in the colour of its (model, series), labelled once, so the spread
    between seeds shows; validation losses (only on validation steps) are dashed with markers.
    """
    if curves.empty:
        return None
    panels = [("Reptile inner-loop loss (task mean)", "outer step",
               [(m, s) for m in params.meta.variants for s in ("loss_first", "loss_last", "val_loss")]),
              ("supervised loss", "step", [(m, s) for m in dict.fromkeys(curves["model"])
                                           if m not in params.meta.variants for s in ("loss", "val_loss")])]
    if (curves["series"] == "grad_norm").any():
        panels.append(("gradient norm before clipping", "step",
                       [(m, "grad_norm") for m in dict.fromkeys(curves["model"])]))
    fig = Figure(figsize=(5.2 * len(panels), 3.9))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    groups = dict(list(curves.groupby(["model", "series"], sort=False)))
    color = 0
    for ax, (title, xlabel, lines) in zip(axes, panels, strict=True):
        for model, series in lines:
            if (model, series) not in groups:
                continue
            style = {"ls": "--", "marker": "o", "ms": 3} if series == "val_loss" else {}
            name = f"{label(model) if not model.startswith('meta') else model}: {series}"
            for i, (_seed, df) in enumerate(groups[model, series].groupby("seed")):
                ax.plot(df["step"], df["value"], color=COLORS[color % len(COLORS)], lw=0.9,
                        label=name if i == 0 else None, **style)
            color += 1
        ax.set(title=title, xlabel=xlabel, yscale="log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return png(fig, dpi=110)


def rmse_bars_png(table: Table, protocol: str) -> bytes:
    """One panel per column (each domain and the zero-shot mean): RMSE per model, 95% interval whiskers when n > 1."""
    rows = table.protocols[protocol].rows
    columns = table.columns
    ncols = len(columns) if len(columns) <= 5 else math.ceil(len(columns) / 2)  # one row, or two balanced rows
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.9 * nrows + 0.9))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, col in zip(axes.flat, columns, strict=False):
        ivs = [r.cells[col].metrics["rmse"] for r in rows]
        means = [iv.mean for iv in ivs]
        err = np.array([[iv.mean - iv.low, iv.high - iv.mean] if iv.low is not None else [0.0, 0.0] for iv in ivs]).T
        bars = ax.bar(np.arange(len(rows)), means, color=[COLORS[i % len(COLORS)] for i in range(len(rows))],
                      yerr=err if table.n_seeds > 1 else None, capsize=4)
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in means], fontsize=7, padding=2)
        ax.set_title(table.column_name(col), fontsize=9)
        ax.set_xticks([])
        ax.set_ylabel("RMSE (m)", fontsize=8)
        ax.set_ylim(0, max(v + e for v, e in zip(means, err[1], strict=True)) * 1.18)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    handles = [Rectangle((0, 0), 1, 1, color=COLORS[i % len(COLORS)]) for i in range(len(rows))]
    note = "bars: mean, whiskers: 95% CI over seeds" if table.n_seeds > 1 else "n=1 seed: point values, no interval"
    fig.legend(handles, [r.label for r in rows], loc="lower center", ncol=min(len(rows), 3), fontsize=7,
               frameon=False)
    fig.suptitle(f"RMSE, {protocol} protocol (lower is better; {note})", fontsize=10)
    bottom = 0.06 * math.ceil(len(rows) / 3) + 0.02
    fig.tight_layout(rect=(0, bottom, 1, 0.95))
    return png(fig, dpi=100)


@torch.no_grad()
def qualitative_png(params: Params, root: Path, models: list[str]) -> bytes:
    """RGB | ground truth | prediction per model | |prediction - gt| per model, on test frames of every domain.

    Depth panels share one colour scale (0 to the evaluation cap) and error panels another, so columns compare
    directly; invalid ground truth (0) is blank in the ground truth and error panels. The first training seed's
    checkpoints.
    """
    layout = Layout(root, params.seeds[0])
    nets = {m: model_from_checkpoint(layout.checkpoint(m))[0].eval() for m in models}
    k = params.report.qualitative_samples
    rows = []
    for ds in params.domains:
        with ShardDataset(shard_path(layout.prepared / ds, "test")) as data:
            idx = np.linspace(0, len(data) - 1, min(k, len(data))).round().astype(int)
            rgb = torch.stack([data[int(i)]["rgb"] for i in idx])
            gt = torch.stack([data[int(i)]["depth"] for i in idx])[:, 0].numpy()
        with torch.no_grad():  # scale 0 is at input resolution
            preds = {m: net(rgb)[0][:, 0].numpy() for m, net in nets.items()}
        rows += [(ds, rgb[j].permute(1, 2, 0).numpy(), gt[j], {m: v[j] for m, v in preds.items()})
                 for j in range(len(idx))]
    vmax = params.evaluate.max_depth
    errors = [np.abs(pr[m] - gt)[gt > 0] for _, _, gt, pr in rows for m in models]
    all_err = np.concatenate(errors) if errors else np.zeros(0)
    emax = max(float(np.percentile(all_err, 98)), 1e-3) if all_err.size else 1.0  # robust to a few wild pixels

    ncols = 2 + 2 * len(models)
    height = 1.5 * len(rows) + 1.2  # inches; the last 0.9 hold the two colour bars
    fig = Figure(figsize=(1.9 * ncols, height))
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    depth_im = err_im = None
    for r, (ds, rgb, gt, preds) in enumerate(rows):
        axes[r, 0].imshow(rgb)
        axes[r, 1].imshow(np.ma.masked_equal(gt, 0), cmap="magma_r", vmin=0, vmax=vmax)
        for c, m in enumerate(models):
            depth_im = axes[r, 2 + c].imshow(preds[m], cmap="magma_r", vmin=0, vmax=vmax)
            err = np.ma.masked_where(gt <= 0, np.abs(preds[m] - gt))
            err_im = axes[r, 2 + len(models) + c].imshow(err, cmap="inferno", vmin=0, vmax=emax)
            axes[r, 2 + len(models) + c].set_xlabel(f"RMSE {float(np.sqrt(np.mean(err.compressed() ** 2))):.2f}"
                                                    if err.count() else "no valid gt", fontsize=7)
        axes[r, 0].set_ylabel(ds, fontsize=8)
    titles = ["RGB", "ground truth", *(label(m) for m in models), *(f"|error| {m}" for m in models)]
    for c, title in enumerate(titles):
        axes[0, c].set_title(title, fontsize=7, wrap=True)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(rect=(0, 0.9 / height, 1, 1))
    if depth_im is not None and err_im is not None:
        for x, im, name in ((0.08, depth_im, "depth (m)"), (0.56, err_im, "|prediction - ground truth| (m)")):
            cax = fig.add_axes((x, 0.5 / height, 0.36, 0.12 / height))
            bar = fig.colorbar(im, cax=cax, orientation="horizontal")
            bar.set_label(name, fontsize=7)
            cax.tick_params(labelsize=6)
    return png(fig, dpi=90)


def qualitative_models(table: Table) -> list[str]:
    """The fine-tuned models of the table (baseline first, the way the table reads), else every checkpointed one."""
    rows = next(iter(table.protocols.values())).rows
    models = [r.model for r in rows if r.model.startswith("ft_")] or [r.model for r in rows if r.model != "constant"]
    return sorted(models, key=lambda m: m != table.baseline)

