"""The report stage: the cross-domain table, loss curves and a qualitative grid, from the stage outputs only.

It reads the metrics files, the loss-curve CSVs and the checkpoints (for the qualitative grid): the report can be
rebuilt at any time without re-running anything else. `reports/metrics.json` is the DVC metrics file, so its keys
are flat-ish and stable: `dvc metrics diff` compares experiments on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are rendered on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from tasks.common import model_from_checkpoint, paths  # noqa: E402
from tasks.evaluate import predict_full_res  # noqa: E402
from tasks.io import MetadepthError, atomic_write  # noqa: E402
from tasks.params import Params  # noqa: E402
from tasks.preprocess.shards import ShardDataset, shard_path  # noqa: E402

LABELS = {
    "init": "random init, no training",
    "meta": "meta-init only (no fine-tuning)",
    "ft_scratch": "scratch + fine-tune (baseline)",
    "ft_meta": "meta-init + fine-tune",
    "ft_pretrained": "pretrained + fine-tune",
}
HEADLINE = ("rmse", "abs_rel", "a1")


def label(model: str) -> str:
    return LABELS.get(model, model)


def load_metrics(params: Params, root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model in params.evaluate.models:
        for dataset in params.data.domains:
            path = paths(root)["metrics"] / f"{model}__{dataset}.json"
            if not path.is_file():
                raise MetadepthError(f"{path}: metrics file missing; run `metadepth stage evaluate {model} {dataset}`")
            out.setdefault(model, {})[dataset] = json.loads(path.read_text())
    return out


def summarise(params: Params, results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Headline numbers per model and domain, the zero-shot mean and the relative RMSE change over the baseline."""
    base = params.report.baseline
    zero_shot = [d for d in params.data.domains if d != params.data.train_domain]
    summary: dict[str, Any] = {"train_domain": params.data.train_domain, "baseline": base, "models": {}}
    for model, per_ds in results.items():
        row: dict[str, Any] = {}
        for ds, r in per_ds.items():
            m = {k: round(r["metrics"][k], 5) for k in HEADLINE}
            b = results[base][ds]["metrics"]["rmse"]
            m["rmse_change_pct"] = round(100.0 * (r["metrics"]["rmse"] - b) / b, 3)
            row[ds] = m
        if zero_shot:
            row["zero_shot_mean"] = {k: round(float(np.mean([row[d][k] for d in zero_shot])), 5)
                                     for k in (*HEADLINE, "rmse_change_pct")}
        summary["models"][model] = row
    return summary


def markdown_table(params: Params, summary: dict[str, Any]) -> str:
    domains = list(params.data.domains)
    cols = [f"{d} (train)" if d == params.data.train_domain else d for d in domains]
    has_mean = len(domains) > 1
    header = "| model | " + " | ".join(cols) + (" | zero-shot mean |" if has_mean else " |")
    lines = [header, "|" + "---|" * (len(cols) + 1 + has_mean)]
    for model, row in summary["models"].items():
        cells = []
        for d in domains + (["zero_shot_mean"] if has_mean else []):
            m = row[d]
            change = "" if model == summary["baseline"] else f" ({m['rmse_change_pct']:+.1f}%)"
            cells.append(f"{m['rmse']:.3f}{change} / {m['abs_rel']:.3f} / {m['a1']:.3f}")
        lines.append(f"| {label(model)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(params: Params, root: Path, out: Path) -> list[str]:
    curves = paths(root)["curves"]
    names = ["meta"] + [f"ft_{n}" for n in params.finetune.inits]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    meta = curves / "meta.csv"
    if meta.is_file():
        df = pd.read_csv(meta)
        for col in ("loss_first", "loss_last"):
            if col in df:
                axes[0].plot(df["step"], df[col], label=col.replace("loss_", "inner step: "))
    axes[0].set(title="Reptile inner-loop loss (task mean)", xlabel="outer step", ylabel="loss", yscale="log")
    axes[0].legend()
    for name in names[1:]:
        f = curves / f"{name}.csv"
        if f.is_file():
            df = pd.read_csv(f)
            axes[1].plot(df["step"], df["loss"], label=label(name))
    axes[1].set(title="fine-tuning loss", xlabel="step", ylabel="loss", yscale="log")
    axes[1].legend()
    fig.tight_layout()
    with atomic_write(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return names


@torch.no_grad()
def plot_qualitative(params: Params, root: Path, out: Path) -> None:
    """RGB | ground truth | one column per fine-tuned model, on test frames from every domain."""
    p = paths(root)
    models = [m for m in params.evaluate.models if m.startswith("ft_")] or list(params.evaluate.models)
    nets = {m: model_from_checkpoint(p["checkpoints"] / f"{m}.pt")[0].eval() for m in models}
    k = params.report.qualitative_samples
    rows = []
    for ds in params.data.domains:
        data = ShardDataset(shard_path(p["prepared"] / ds, "test"))
        idx = np.linspace(0, len(data) - 1, k).round().astype(int)
        batch = torch.stack([data[int(i)]["rgb"] for i in idx]), torch.stack([data[int(i)]["depth"] for i in idx])
        preds = {m: predict_full_res(net, batch[0])[:, 0].numpy() for m, net in nets.items()}
        for j in range(k):
            rows.append((ds, batch[0][j].permute(1, 2, 0).numpy(), batch[1][j, 0].numpy(),
                         {m: v[j] for m, v in preds.items()}))
    ncols = 2 + len(models)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.2 * ncols, 1.6 * len(rows)), squeeze=False)
    vmax = params.evaluate.max_depth
    for r, (ds, rgb, gt, preds) in enumerate(rows):
        axes[r, 0].imshow(rgb)
        axes[r, 1].imshow(np.ma.masked_equal(gt, 0), cmap="magma_r", vmin=0, vmax=vmax)
        for c, m in enumerate(models):
            axes[r, 2 + c].imshow(preds[m], cmap="magma_r", vmin=0, vmax=vmax)
        axes[r, 0].set_ylabel(ds, fontsize=8)
    for c, title in enumerate(["RGB", "ground truth"] + [label(m) for m in models]):
        axes[0, c].set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    with atomic_write(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def run_report(params: Params, root: Path) -> dict[str, Any]:
    results = load_metrics(params, root)
    summary = summarise(params, results)
    reports = paths(root)["reports"]
    figures = reports / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    plot_curves(params, root, figures / "loss_curves.png")
    plot_qualitative(params, root, figures / "qualitative.png")
    table = markdown_table(params, summary)
    protocol = next(iter(next(iter(results.values())).values()))["protocol"]
    md = f"""# Cross-domain depth report

Trained on **{params.data.train_domain}**, evaluated on the test split of every domain (the others are zero-shot).
Each cell: **RMSE (m)** (relative RMSE change vs. the baseline) / AbsRel / delta1. Lower RMSE and AbsRel are better,
higher delta1 is better. Baseline: {label(params.report.baseline)}.

{table}

Protocol: depth caps [{protocol['min_depth']}, {protocol['max_depth']}] m, crop {protocol['crop']},
alignment {protocol['align']}, {protocol['aggregation']}. Encoder `{params.model.encoder}`,
{params.data.height}x{params.data.width}, seed {params.seed}, meta steps {params.meta.steps}
(L={params.meta.inner_steps} inner steps), fine-tuning steps {params.finetune.steps}.

![loss curves](figures/loss_curves.png)

![qualitative](figures/qualitative.png)
"""
    with atomic_write(reports / "summary.md") as tmp:
        tmp.write_text(md)
    with atomic_write(reports / "metrics.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return {"summary": str((reports / "summary.md").relative_to(root)), "table": table}
