"""The report stage: the cross-domain table, intervals over seeds, loss curves and a qualitative grid with error maps.

It reads the metrics files, the loss-curve CSVs and the checkpoints (for the qualitative grid): the report can be
rebuilt at any time without re-running anything else. Outputs:
- `reports/summary.md`: the table as Markdown (what the CLI prints) and the figures;
- `reports/index.html`: the same and more (bar charts, interval table, protocol) as one static page with inline CSS
  and figures by relative path, so it opens from disk or from an MLflow artifact download without a server;
- `reports/metrics.json`: the DVC metrics file, so its keys are flat-ish and stable: `dvc metrics diff` compares
  experiments on it.

Seeds: every statistic below takes, per model and domain, a *list* of metrics files, one per training seed of
params `seeds` (paired by position across models: seed i of a model against seed i of the baseline). With one seed
the lists have length 1 and the report shows point values marked n=1; with several it shows means and 95%
t-intervals.
"""

from __future__ import annotations

import html
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are rendered on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from tasks.checkpoints import model_from_checkpoint  # noqa: E402
from tasks.io import MetadepthError, atomic_write  # noqa: E402
from tasks.layout import Layout  # noqa: E402
from tasks.params import Params  # noqa: E402
from tasks.preprocess.shards import ShardDataset, shard_path  # noqa: E402

LABELS = {
    "scratch": "random init, no training",
    "pretrained": "pretrained encoder, no training",
    "meta": "meta-init only (no fine-tuning)",
    "ft_scratch": "scratch + fine-tune (baseline)",
    "ft_meta": "meta-init + fine-tune",
    "ft_pretrained": "pretrained + fine-tune",
}
HEADLINE = ("rmse", "abs_rel", "a1")
ZERO_SHOT = "zero_shot_mean"
# Two-sided 95% Student-t quantiles t(0.975, df) for df = 1..30 (n = 2..31 seeds), used when scipy is absent.
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

Runs = dict[str, dict[str, list[dict[str, Any]]]]  # model -> dataset -> one metrics-file dict per seed


def label(model: str) -> str:
    if model in LABELS:
        return LABELS[model]
    if model.startswith("ft_meta"):  # meta-init ablation variants: ft_meta_no_task_aug, ft_meta_L8, ...
        return f"{model[3:]} + fine-tune"
    if model.startswith("meta"):
        return f"{model} (no fine-tuning)"
    return model


# --- statistics over seeds -------------------------------------------------------------------------------------


def t_quantile(df: int) -> float:
    """t(0.975, df): the multiplier of the standard error for a two-sided 95% interval."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    try:
        from scipy import stats
    except ImportError:
        return t_quantile_fallback(df)
    return float(stats.t.ppf(0.975, df))


def t_quantile_fallback(df: int) -> float:
    """The table for df <= 30, a Cornish-Fisher expansion around the normal quantile beyond (error < 1e-4)."""
    if df <= len(T95):
        return T95[df - 1]
    z = 1.959964
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its 95% confidence interval; `low`/`high` are None for a single seed."""

    mean: float
    low: float | None
    high: float | None
    n: int

    def text(self, fmt: str = "{:.3f}", unit: str = "") -> str:
        point = fmt.format(self.mean) + unit
        if self.low is None or self.high is None:
            return f"{point} (n={self.n})"
        return f"{point} [{fmt.format(self.low)}, {fmt.format(self.high)}]{unit} (n={self.n})"

    def as_dict(self) -> dict[str, Any]:
        r = lambda v: None if v is None else round(v, 5)  # noqa: E731
        return {"mean": r(self.mean), "ci95_low": r(self.low), "ci95_high": r(self.high), "n": self.n}


def mean_ci(values: list[float]) -> Interval:
    """Mean and 95% t-interval (mean +- t(0.975, n-1) * s / sqrt(n), s the sample standard deviation)."""
    if not values:
        raise ValueError("mean_ci needs at least one value")
    mean = statistics.fmean(values)
    if len(values) == 1:
        return Interval(mean, None, None, 1)
    half = t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values))


def relative_change(values: list[float], baseline: list[float]) -> Interval:
    """Relative change in % of `values` over `baseline`, paired by seed: the interval is over per-seed changes.

    Pairing removes the seed-to-seed variation both runs share (same data order, same initial weights), which is
    what the paper's claim is about: the same network with and without meta-initialization.
    """
    if len(values) != len(baseline):
        raise MetadepthError(f"relative change needs the same seeds for model and baseline, got {len(values)} and "
                             f"{len(baseline)} runs; evaluate every model on every seed")
    return mean_ci([100.0 * (v - b) / b for v, b in zip(values, baseline, strict=True)])


def seed_statistics(params: Params, runs: Runs) -> dict[str, dict[str, dict[str, Interval | None]]]:
    """Per model and column (each domain, then the zero-shot mean): RMSE and its relative change over the baseline.

    The zero-shot column is computed per seed first (mean over the zero-shot domains of RMSE, and of the relative
    changes, as in `summarise`), then the interval is taken over seeds.
    """
    base = params.report.baseline
    zero_shot = [d for d in params.data.domains if d != params.data.train_domain]
    rmse = {m: {d: [r["metrics"]["rmse"] for r in per_seed] for d, per_seed in per_ds.items()}
            for m, per_ds in runs.items()}
    out: dict[str, dict[str, dict[str, Interval | None]]] = {}
    for model, per_ds in rmse.items():
        row: dict[str, dict[str, Interval | None]] = {}
        for ds, values in per_ds.items():
            row[ds] = {"rmse": mean_ci(values),
                       "change": None if model == base else relative_change(values, rmse[base][ds])}
        if zero_shot:
            n = len(per_ds[zero_shot[0]])
            zs_rmse = [statistics.fmean(per_ds[d][i] for d in zero_shot) for i in range(n)]
            zs_change = [statistics.fmean(100.0 * (per_ds[d][i] - rmse[base][d][i]) / rmse[base][d][i]
                                          for d in zero_shot) for i in range(n)]
            row[ZERO_SHOT] = {"rmse": mean_ci(zs_rmse), "change": None if model == base else mean_ci(zs_change)}
        out[model] = row
    return out


# --- loading and the headline summary ----------------------------------------------------------------------------


def load_metrics(params: Params, root: Path) -> Runs:
    """Every metrics file of every training seed, in `seeds` order (the order pairs runs across models)."""
    out: Runs = {}
    for model in params.evaluate.models:
        for dataset in params.data.domains:
            for seed in params.seeds:
                path = Layout(root, seed).metrics / f"{model}__{dataset}.json"
                if not path.is_file():
                    raise MetadepthError(f"{path}: metrics file missing; run `metadepth stage evaluate`")
                record = json.loads(path.read_text())
                first = record["protocols"][next(iter(record["protocols"]))]  # the first protocol's view
                out.setdefault(model, {}).setdefault(dataset, []).append({**record, **first})
    return out


def mean_over_seeds(runs: Runs) -> dict[str, dict[str, dict[str, Any]]]:
    """Per model and dataset, one metrics dict whose metrics are the means over seeds (for the headline table)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for m, per_ds in runs.items():
        for d, per_seed in per_ds.items():
            first = dict(per_seed[0])
            first["metrics"] = {k: statistics.fmean(r["metrics"][k] for r in per_seed) for k in first["metrics"]}
            out.setdefault(m, {})[d] = first
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
            row[ZERO_SHOT] = {k: round(float(np.mean([row[d][k] for d in zero_shot])), 5)
                              for k in (*HEADLINE, "rmse_change_pct")}
        summary["models"][model] = row
    return summary


def protocols(runs: Runs, baseline: str) -> tuple[dict[str, Any], list[str]]:
    """The evaluation protocol, and the metrics files that break it.

    Datasets may legitimately differ (the Eigen crop is for NYUv2 only), so a key whose value differs between datasets
    maps to {dataset: value}. What must not differ is the protocol of two models on the same dataset: that column would
    compare them under different rules. Those files are returned, named, for a warning.
    """
    per_ds = {d: rs[0].get("protocol", {}) for d, rs in runs[baseline].items()}
    keys = list(dict.fromkeys(k for p in per_ds.values() for k in p))
    merged: dict[str, Any] = {}
    for k in keys:
        values = {d: p.get(k) for d, p in per_ds.items()}
        merged[k] = next(iter(values.values())) if len({json.dumps(v) for v in values.values()}) == 1 else values
    differing = [f"{m}__{d}" for m, per in runs.items() for d, rs in per.items() for r in rs
                 if r.get("protocol", {}) != per_ds[d]]
    return merged, list(dict.fromkeys(differing))


def protocol_value(value: Any) -> str:
    """One protocol value as text: `eigen`, or `nyuv2: eigen, hypersim: none` when datasets differ."""
    if isinstance(value, dict):
        return ", ".join(f"{d}: {v}" for d, v in value.items())
    return str(value)


def markdown_table(params: Params, summary: dict[str, Any]) -> str:
    domains = list(params.data.domains)
    cols = [f"{d} (train)" if d == params.data.train_domain else d for d in domains]
    has_mean = len(domains) > 1
    header = "| model | " + " | ".join(cols) + (" | zero-shot mean |" if has_mean else " |")
    lines = [header, "|" + "---|" * (len(cols) + 1 + has_mean)]
    for model, row in summary["models"].items():
        cells = []
        for d in domains + ([ZERO_SHOT] if has_mean else []):
            m = row[d]
            change = "" if model == summary["baseline"] else f" ({m['rmse_change_pct']:+.1f}%)"
            cells.append(f"{m['rmse']:.3f}{change} / {m['abs_rel']:.3f} / {m['a1']:.3f}")
        lines.append(f"| {label(model)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- figures -----------------------------------------------------------------------------------------------------


def _save(fig: plt.Figure, out: Path, dpi: int) -> None:
    with atomic_write(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def plot_curves(params: Params, root: Path, out: Path) -> list[str]:
    """Reptile inner-loop losses (first and last inner step, per meta variant) and the fine-tuning losses.

    Several seeds: one line per seed in the same colour, labelled once, so the spread between seeds is visible.
    """
    variants = list(params.meta.variants)
    names = variants + [f"ft_{n}" for n in params.finetune.inits]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = iter(plt.get_cmap("tab10").colors)

    def draw(ax: Any, name: str, columns: dict[str, str]) -> None:
        for col, text in columns.items():
            color = next(colors)
            for i, seed in enumerate(params.seeds):
                f = Layout(root, seed).curves / f"{name}.csv"
                if f.is_file():
                    df = pd.read_csv(f)
                    if col in df:
                        ax.plot(df["step"], df[col], color=color, lw=1.2 if len(params.seeds) == 1 else 0.9,
                                label=text if i == 0 else None)

    for variant in variants:
        prefix = "" if len(variants) == 1 else f"{variant}, "
        draw(axes[0], variant, {c: prefix + c.replace("loss_", "inner step: ") for c in ("loss_first", "loss_last")})
    axes[0].set(title="Reptile inner-loop loss (task mean)", xlabel="outer step", ylabel="loss", yscale="log")
    for name in names[len(variants):]:
        draw(axes[1], name, {"loss": label(name)})
    axes[1].set(title="fine-tuning loss", xlabel="step", ylabel="loss", yscale="log")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out, dpi=110)
    return names


def plot_rmse_bars(params: Params, stats: dict[str, dict[str, dict[str, Interval | None]]], out: Path) -> None:
    """One panel per test domain (and the zero-shot mean): RMSE per model, 95% interval bars when n > 1."""
    columns = list(params.data.domains) + ([ZERO_SHOT] if ZERO_SHOT in next(iter(stats.values())) else [])
    models = list(stats)
    colors = plt.get_cmap("tab10").colors
    ncols = len(columns) if len(columns) <= 5 else math.ceil(len(columns) / 2)  # one row, or two balanced rows
    nrows = math.ceil(len(columns) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.9 * nrows + 0.6), squeeze=False)
    n_seeds = 1
    for ax, col in zip(axes.flat, columns, strict=False):
        ivs = [stats[m][col]["rmse"] for m in models]
        n_seeds = max(iv.n for iv in ivs)
        means = [iv.mean for iv in ivs]
        err = np.array([[iv.mean - iv.low, iv.high - iv.mean] if iv.low is not None else [0.0, 0.0] for iv in ivs]).T
        x = np.arange(len(models))
        bars = ax.bar(x, means, color=[colors[i % len(colors)] for i in range(len(models))],
                      yerr=err if n_seeds > 1 else None, capsize=4)
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in means], fontsize=7, padding=2)
        title = {ZERO_SHOT: "zero-shot mean", params.data.train_domain: f"{col} (train)"}.get(col, f"{col} (zero-shot)")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_ylabel("RMSE (m)", fontsize=8)
        ax.set_ylim(0, max(v + e for v, e in zip(means, err[1], strict=True)) * 1.18)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[i % len(colors)]) for i in range(len(models))]
    note = "bars: mean, whiskers: 95% CI over seeds" if n_seeds > 1 else "n=1 seed: point values, no interval"
    fig.legend(handles, [label(m) for m in models], loc="lower center", ncol=min(len(models), 3), fontsize=8,
               frameon=False)
    fig.suptitle(f"RMSE per test domain (lower is better; {note})", fontsize=10)
    fig.tight_layout(rect=(0, 0.1 if len(models) <= 3 else 0.16, 1, 0.96))
    _save(fig, out, dpi=100)


@torch.no_grad()
def plot_qualitative(params: Params, root: Path, out: Path) -> list[str]:
    """RGB | ground truth | prediction per fine-tuned model | |prediction - gt| per model, on every domain.

    Depth panels share one colour scale (0 to the evaluation cap) and error panels another, so columns compare
    directly; invalid ground truth (0) is blank in the GT and error panels.
    """
    layout = Layout(root, params.seeds[0])  # the first training seed's models
    models = [m for m in params.evaluate.models if m.startswith("ft_")] or list(params.evaluate.models)
    base = params.report.baseline
    models = sorted(models, key=lambda m: m != base)  # baseline first, the way the table reads
    nets = {m: model_from_checkpoint(layout.checkpoint(m))[0].eval() for m in models}
    k = params.report.qualitative_samples
    rows = []
    for ds in params.data.domains:
        data = ShardDataset(shard_path(layout.prepared / ds, "test"))
        idx = np.linspace(0, len(data) - 1, min(k, len(data))).round().astype(int)
        rgb = torch.stack([data[int(i)]["rgb"] for i in idx])
        gt = torch.stack([data[int(i)]["depth"] for i in idx])[:, 0].numpy()
        with torch.no_grad():  # scale 0 is at input resolution
            preds = {m: net(rgb)[0][:, 0].numpy() for m, net in nets.items()}
        for j in range(len(idx)):
            rows.append((ds, rgb[j].permute(1, 2, 0).numpy(), gt[j], {m: v[j] for m, v in preds.items()}))
    vmax = params.evaluate.max_depth
    errors = [np.ma.masked_where(gt <= 0, np.abs(pr[m] - gt)) for _, _, gt, pr in rows for m in models]
    all_err = np.concatenate([e.compressed() for e in errors]) if errors else np.zeros(0)
    emax = max(float(np.percentile(all_err, 98)), 1e-3) if all_err.size else 1.0  # robust to a few wild pixels

    ncols = 2 + 2 * len(models)
    height = 1.5 * len(rows) + 1.2  # inches; the last 0.9 hold the two colour bars
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.9 * ncols, height), squeeze=False)
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
    titles = (["RGB", "ground truth"] + [label(m) for m in models]
              + [f"|error| {label(m).split(' (')[0]}" for m in models])
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
    _save(fig, out, dpi=90)
    return models


# --- documents ---------------------------------------------------------------------------------------------------


def _change_lines(params: Params, stats: dict[str, dict[str, dict[str, Interval | None]]]) -> list[str]:
    col = ZERO_SHOT if ZERO_SHOT in next(iter(stats.values())) else params.data.train_domain
    where = "zero-shot mean over test domains" if col == ZERO_SHOT else f"on {col}"
    lines = []
    for model, row in stats.items():
        change = row[col]["change"]
        if change is not None:
            lines.append(f"- {label(model)}: {change.text('{:+.1f}', ' %')} RMSE vs. the baseline ({where})")
    return lines


def _css() -> str:
    return """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d232b;margin:0;background:#f5f6f8}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px;background:#fff;min-height:100vh}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #e3e6ea;padding-bottom:4px}
.sub{color:#5b6572;margin:0 0 16px}.note{color:#5b6572;font-size:12.5px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{border:1px solid #e3e6ea;border-radius:8px;padding:10px 14px;min-width:210px;background:#fafbfc}
.card .v{font-size:22px;font-weight:600}.card .l{font-size:12px;color:#5b6572}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #e3e6ea;padding:5px 9px;text-align:right;vertical-align:top}
th{background:#f0f2f5;font-weight:600}td.m,th.m{text-align:left}
td small{display:block;color:#5b6572;font-size:11.5px}.best{font-weight:700}
.good{color:#137333}.bad{color:#b3261e}
img{max-width:100%;height:auto;border:1px solid #eef0f3;border-radius:4px}
code{background:#f0f2f5;padding:1px 4px;border-radius:3px}.warn{color:#b3261e;font-weight:600}
"""


def _tone(change: float) -> str:
    """CSS class of a relative change: below -0.05 % is better, above +0.05 % worse, else it shows as 0.0."""
    return "good" if change < -0.05 else "bad" if change > 0.05 else ""


def _cell_style(change: float | None) -> str:
    """A tint proportional to the relative RMSE change: green better, red worse, full at 30 %."""
    if change is None or not math.isfinite(change):
        return ""
    alpha = min(abs(change) / 30.0, 1.0) * 0.35
    rgb = "19,115,51" if change < 0 else "179,38,30"
    return f' style="background:rgba({rgb},{alpha:.2f})"'


def html_report(params: Params, summary: dict[str, Any], stats: dict[str, dict[str, dict[str, Interval | None]]],
                runs: Runs, figures: dict[str, str]) -> str:
    """The static page. Everything inline but the figures, which are referenced relative to reports/."""
    esc = html.escape
    domains = list(params.data.domains)
    has_mean = len(domains) > 1
    cols = domains + ([ZERO_SHOT] if has_mean else [])
    col_name = {d: f"{d} (train)" if d == params.data.train_domain else f"{d} (zero-shot)" for d in domains}
    col_name[ZERO_SHOT] = "zero-shot mean"
    base = summary["baseline"]
    n_seeds = max(iv["rmse"].n for row in stats.values() for iv in row.values())
    protocol, differing = protocols(runs, base)

    best = {c: min(summary["models"][m][c]["rmse"] for m in summary["models"]) for c in cols}
    head = "".join(f"<th>{esc(col_name[c])}</th>" for c in cols)
    body = []
    for model, row in summary["models"].items():
        cells = []
        for c in cols:
            m = row[c]
            change = None if model == base else m["rmse_change_pct"]
            change_txt = "" if change is None else f' <span class="{_tone(change)}">({change:+.1f}%)</span>'
            cls = ' class="best"' if m["rmse"] == best[c] else ""
            cells.append(f"<td{_cell_style(change)}><span{cls}>{m['rmse']:.3f}</span>{change_txt}"
                         f"<small>AbsRel {m['abs_rel']:.3f} · δ1 {m['a1']:.3f}</small></td>")
        body.append(f'<tr><td class="m">{esc(label(model))}<small>{esc(model)}</small></td>{"".join(cells)}</tr>')
    table = (f'<table id="cross-domain"><thead><tr><th class="m">initialization</th>{head}</tr></thead>'
             f'<tbody>{"".join(body)}</tbody></table>')

    ci_rows = []
    for model, row in stats.items():
        if model == base:
            continue
        cells = "".join(f"<td{_cell_style(row[c]['change'].mean)}>{esc(row[c]['change'].text('{:+.1f}', ' %'))}</td>"
                        for c in cols)
        ci_rows.append(f'<tr><td class="m">{esc(label(model))}</td>{cells}</tr>')
    ci_table = (f'<table id="relative-change"><thead><tr><th class="m">vs. {esc(label(base))}</th>{head}</tr>'
                f'</thead><tbody>{"".join(ci_rows)}</tbody></table>') if ci_rows else "<p>No other model.</p>"

    rmse_rows = "".join(
        f'<tr><td class="m">{esc(label(m))}</td>'
        + "".join(f"<td>{esc(stats[m][c]['rmse'].text())}</td>" for c in cols) + "</tr>" for m in stats)
    rmse_table = (f'<table id="rmse-ci"><thead><tr><th class="m">RMSE (m)</th>{head}</tr></thead>'
                  f"<tbody>{rmse_rows}</tbody></table>")

    cards = []
    col = ZERO_SHOT if has_mean else domains[0]
    for model, row in stats.items():
        change = row[col]["change"]
        if change is not None:
            cls = _tone(change.mean)
            spread = "n=1" if change.low is None else f"n={change.n}, 95% CI [{change.low:+.1f}, {change.high:+.1f}]"
            cards.append(f'<div class="card"><div class="v {cls}">{change.mean:+.1f} %</div>'
                         f'<div class="l">{esc(label(model))}<br>RMSE vs. baseline, {esc(col_name[col])}, '
                         f"{spread}</div></div>")

    n_images = {d: runs[base][d][0].get("n_images", "?") for d in domains}
    n_pixels = {d: runs[base][d][0].get("n_valid_pixels", "?") for d in domains}
    proto_rows = "".join(f'<tr><td class="m">{esc(str(k))}</td><td class="m">{esc(protocol_value(v))}</td></tr>'
                         for k, v in protocol.items())
    proto_rows += "".join(f'<tr><td class="m">test images / valid pixels: {esc(d)}</td>'
                          f'<td class="m">{n_images[d]} / {n_pixels[d]}</td></tr>' for d in domains)
    proto_warn = (f'<p class="warn">These metrics files were made under another protocol than the baseline on the '
                  f'same dataset: {esc(", ".join(differing))}; re-run their evaluate stages.</p>') if differing else ""
    seeds_note = ("one seed (n=1): point values, no interval; run more seeds to get 95% confidence intervals"
                  if n_seeds == 1 else f"{n_seeds} seeds: mean and 95% t-interval over seeds, paired with the "
                  "baseline's run of the same seed for the relative change")
    variants = ", ".join(params.meta.variants)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>metadepth report: trained on {esc(params.data.train_domain)}</title><style>{_css()}</style></head>
<body><main>
<h1>Cross-domain depth report</h1>
<p class="sub">Meta-initialization (Reptile) vs. the same network from the same random initialization.
Trained on <b>{esc(params.data.train_domain)}</b>, evaluated zero-shot on {esc(", ".join(d for d in domains
if d != params.data.train_domain) or "no other domain")}. Encoder <code>{esc(params.model.encoder)}</code>,
{params.data.height}×{params.data.width}, data seed {params.seed},
training seeds {esc(str(params.seeds))}, meta variants {esc(variants)}
({params.meta.steps} outer steps, L={params.meta.inner_steps}), fine-tuning {params.finetune.steps} steps.</p>
<div class="cards">{"".join(cards)}</div>

<h2>Train × test matrix</h2>
<p class="note">Each cell: RMSE in metres (relative RMSE change vs. the baseline, {esc(label(base))}), then AbsRel and
δ1 (&lt;1.25). Lower RMSE/AbsRel and higher δ1 are better; bold is the lowest RMSE of the column. Values are means
over seeds.</p>
{table}

<h2>RMSE per test domain</h2>
<p class="note">{esc(seeds_note)}.</p>
<img src="{figures['bars']}" alt="RMSE per test domain">
{rmse_table}

<h2>Relative RMSE change over the baseline</h2>
<p class="note">(RMSE − RMSE<sub>baseline</sub>) / RMSE<sub>baseline</sub> per seed, then mean and 95% interval over
seeds; negative is better. The zero-shot column averages the per-domain changes of each seed first. For reference, the
paper's abstract reports a prior up to 27.8% better in RMSE from meta-learning on limited data, and fine-tuning from the
meta-initialization consistently better than the same network without it.</p>
{ci_table}

<h2>Loss curves</h2>
<img src="{figures['curves']}" alt="meta-learning and fine-tuning loss curves">

<h2>Qualitative results and error maps</h2>
<p class="note">Test frames of every domain. Depth panels share one colour scale (0 to {params.evaluate.max_depth} m),
error panels another (|prediction − ground truth|, blank where ground truth is invalid); the number under each error
map is that frame's RMSE.</p>
<img src="{figures['qualitative']}" alt="RGB, ground truth, predictions and error maps">

<h2>Evaluation protocol</h2>
{proto_warn}<table id="protocol"><tbody>{proto_rows}</tbody></table>
<p class="note">From the <code>protocol</code> field of
<code>data/metrics/seed&lt;k&gt;/&lt;model&gt;__&lt;dataset&gt;.json</code>.
Also: <a href="summary.md">summary.md</a>, <a href="metrics.json">metrics.json</a>.</p>
</main></body></html>
"""


def not_run_rows(params: Params) -> str:
    """Say which baseline rows are absent and why, so a missing row is never mistaken for a missing result."""
    lines = []
    if "pretrained" not in params.init.kinds:
        lines.append("- pretrained-initialisation baseline: not run (set `init.pretrained_path` to a local encoder "
                     "weights file, add `pretrained` to `init.kinds` and to `finetune.inits`).")
    ablations = [v for v in params.meta.variants if v != "meta"]
    if not ablations:
        lines.append("- ablations: none enabled (add entries to `meta.variants`, see params.yaml).")
    return ("\nNot in this report:\n\n" + "\n".join(lines) + "\n") if lines else ""


def run_report(params: Params, root: Path) -> dict[str, Any]:
    runs = load_metrics(params, root)
    summary = summarise(params, mean_over_seeds(runs))
    stats = seed_statistics(params, runs)
    reports = Layout(root).reports
    figures = reports / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    rel = {"curves": "figures/loss_curves.png", "qualitative": "figures/qualitative.png",
           "bars": "figures/rmse_bars.png"}
    plot_curves(params, root, reports / rel["curves"])
    plot_qualitative(params, root, reports / rel["qualitative"])
    plot_rmse_bars(params, stats, reports / rel["bars"])
    table = markdown_table(params, summary)
    protocol, differing = protocols(runs, params.report.baseline)
    n_seeds = max(iv["rmse"].n for row in stats.values() for iv in row.values())
    changes = "\n".join(_change_lines(params, stats))
    mismatch = (f"\n**Warning:** {', '.join(differing)} used another protocol than the baseline on the same dataset; "
                "re-run their evaluate stages.\n") if differing else ""
    pv = {k: protocol_value(protocol.get(k)) for k in ("min_depth", "max_depth", "crop", "align", "aggregation")}
    skipped = not_run_rows(params)
    md = f"""# Cross-domain depth report

Trained on **{params.data.train_domain}**, evaluated on the test split of every domain (the others are zero-shot).
Each cell: **RMSE (m)** (relative RMSE change vs. the baseline) / AbsRel / delta1. Lower RMSE and AbsRel are better,
higher delta1 is better. Baseline: {label(params.report.baseline)}.

{table}

Relative RMSE change with 95% confidence interval over seeds ({n_seeds} seed{'s' if n_seeds > 1 else ''}; n=1 has
no interval):

{changes}

Protocol: depth caps [{pv['min_depth']}, {pv['max_depth']}] m, crop {pv['crop']},
alignment {pv['align']}, {pv['aggregation']}. Encoder `{params.model.encoder}`,
{params.data.height}x{params.data.width}, data seed {params.seed},
training seeds {params.seeds}, meta steps {params.meta.steps}
(L={params.meta.inner_steps} inner steps), fine-tuning steps {params.finetune.steps}.
{mismatch}{skipped}
The full report (bar charts per test domain, intervals, error maps, protocol) is [index.html](index.html).

![RMSE per test domain](figures/rmse_bars.png)

![loss curves](figures/loss_curves.png)

![qualitative](figures/qualitative.png)
"""
    page = html_report(params, summary, stats, runs, rel)
    summary["n_seeds"] = n_seeds
    summary["rmse_change_ci95"] = {m: {c: iv["change"].as_dict() for c, iv in row.items() if iv["change"]}
                                   for m, row in stats.items() if m != params.report.baseline}
    with atomic_write(reports / "summary.md") as tmp:
        tmp.write_text(md)
    with atomic_write(reports / "index.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    with atomic_write(reports / "metrics.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    return {"summary": str((reports / "summary.md").relative_to(root)), "table": table,
            "html": str((reports / "index.html").relative_to(root))}
