"""The report's one table model, computed once from the metrics files; every renderer only formats it.

Per protocol (the keys of each metrics file's `protocols`, `metric` first): rows are models, columns are the domains
plus the zero-shot mean (mean over the held-out domains, every domain but train_domain), and each cell holds
every metric's mean and 95% interval over seeds, the per-seed RMSE, and the relative RMSE change against
report.baseline (stats.relative_change, paired by seed).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.io import MetadepthError
from tasks.layout import Layout
from tasks.params import Params
from tasks.report.stats import Interval, mean_ci, relative_change

SCHEMA_VERSION = 2
ZERO_SHOT = "zero_shot_mean"
HEADLINE = ("rmse", "abs_rel", "a1")
SANITY = ("scratch", "constant")  # rows that show how far a model is from not learning / from guessing
LABELS = {
    "scratch": "untrained random start (sanity: no learning)",
    "constant": "constant training-set median depth (sanity: guessing)",
    "pretrained": "pretrained encoder, no training",
    "meta": "meta-learning only (Reptile, no fine-tuning)",
    "sup": "direct supervised learning, the meta stage's budget (no fine-tuning)",
    "ft_scratch": "scratch + fine-tune",
    "ft_meta": "meta-init + fine-tune",
    "ft_sup": "direct supervised (meta's budget) + fine-tune",
    "ft_pretrained": "pretrained + fine-tune",
}
ALIGN_TEXT = {
    "none": "metric depth, no alignment: predictions are scored as they are",
    "median": "per-image median scaling: each prediction is scaled by median(ground truth) / median(prediction)",
    "scale_shift": "per-image least-squares scale and shift",
}

Runs = dict[str, dict[str, list[dict[str, Any]]]]  # model -> dataset -> one metrics-file dict per seed


def label(model: str) -> str:
    if model in LABELS:
        return LABELS[model]
    if model.startswith("ft_meta"):  # meta-init ablation variants: ft_meta_no_task_aug, ft_meta_L8, ...
        return f"{model[3:]} + fine-tune"
    if model.startswith("meta"):
        return f"{model} (no fine-tuning)"
    return model


@dataclass(frozen=True)
class Cell:
    metrics: dict[str, Interval]  # every metric of the metrics files: mean and 95% interval over seeds
    rmse_seeds: tuple[float, ...]  # per-seed RMSE in `seeds` order: what relative changes pair
    change: Interval | None  # relative RMSE change (%) against report.baseline; None on the baseline's row


@dataclass(frozen=True)
class Row:
    model: str
    label: str
    sanity: bool
    cells: dict[str, Cell]  # column (domain or ZERO_SHOT) -> cell


@dataclass(frozen=True)
class ProtocolTable:
    name: str
    protocol: dict[str, Any]  # the protocol fields; a field that differs between datasets maps to {dataset: value}
    differing: list[str]  # metrics files scored under another protocol than the baseline's on the same dataset
    n_images: dict[str, int]  # per dataset, the baseline's first seed
    rows: list[Row]

    def row(self, model: str) -> Row | None:
        return next((r for r in self.rows if r.model == model), None)

    def best_rmse(self, column: str) -> float:
        return min(r.cells[column].metrics["rmse"].mean for r in self.rows)

    @property
    def description(self) -> str:
        align = self.protocol.get("align", "none")
        return ALIGN_TEXT.get(align, f"alignment {align}") if isinstance(align, str) else f"alignment {align}"


@dataclass(frozen=True)
class Table:
    train_domain: str
    baseline: str
    domains: list[str]
    held_out: list[str]
    seeds: list[int]
    protocols: dict[str, ProtocolTable]  # `metric` first

    @property
    def columns(self) -> list[str]:
        return self.domains + ([ZERO_SHOT] if self.held_out else [])

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def column_name(self, column: str) -> str:
        if column == ZERO_SHOT:
            return "zero-shot mean"
        return f"{column} (train)" if column == self.train_domain else f"{column} (zero-shot)"


def load_metrics(params: Params, root: Path) -> Runs:
    """Every metrics file of every training seed, in `seeds` order (the order pairs runs across models).

    evaluate.models must all be there; the sanity rows (SANITY) are added when all their files are there.
    """
    out: Runs = {}
    models = list(params.evaluate.models) + [m for m in SANITY if m not in params.evaluate.models]
    for model in models:
        files = [Layout(root, seed).metrics_file(model, dataset)
                 for dataset in params.domains for seed in params.seeds]
        missing = [f for f in files if not f.is_file()]
        if missing and model not in params.evaluate.models:
            continue
        if missing:
            raise MetadepthError(f"{missing[0]}: metrics file missing; run the evaluate stage "
                                 "(`metadepth stage evaluate`)")
        for f in files:
            record = json.loads(f.read_text())
            if record.get("schema_version") != SCHEMA_VERSION:
                raise MetadepthError(f"{f}: metrics schema {record.get('schema_version', 1)}, the report reads "
                                     f"schema {SCHEMA_VERSION}; re-run the evaluate stage (`metadepth stage evaluate`)")
            out.setdefault(model, {}).setdefault(record["dataset"], []).append(record)
    return out


def protocol_names(runs: Runs, baseline: str) -> list[str]:
    first = next(iter(runs[baseline].values()))[0]
    names = list(first["protocols"])
    return sorted(names, key=lambda n: n != "metric")


def merged_protocol(runs: Runs, baseline: str, name: str) -> tuple[dict[str, Any], list[str]]:
    """One protocol's fields, and the metrics files that break it.

    Datasets may legitimately differ (the Eigen crop is for NYUv2 only), so a field whose value differs between
    datasets maps to {dataset: value}. What must not differ is the protocol of two models on the same dataset: that
    column would compare them under different rules. Those files are returned, named, for a warning.
    """
    per_ds = {d: rs[0]["protocols"][name]["protocol"] for d, rs in runs[baseline].items()}
    keys = list(dict.fromkeys(k for p in per_ds.values() for k in p))
    merged: dict[str, Any] = {}
    for k in keys:
        values = {d: p.get(k) for d, p in per_ds.items()}
        merged[k] = next(iter(values.values())) if len({json.dumps(v) for v in values.values()}) == 1 else values
    differing = [f"{m}__{d}" for m, per in runs.items() for d, rs in per.items() for r in rs
                 if r["protocols"][name]["protocol"] != per_ds[d]]
    return merged, list(dict.fromkeys(differing))


def _cell(per_seed: list[dict[str, float]], base: Cell | None) -> Cell:
    rmse = tuple(m["rmse"] for m in per_seed)
    return Cell(metrics={k: mean_ci([m[k] for m in per_seed]) for k in per_seed[0]}, rmse_seeds=rmse,
                change=None if base is None else relative_change(rmse, base.rmse_seeds))


def _seed_metrics(runs: Runs, model: str, protocol: str, columns: list[str], held_out: list[str]) -> dict:
    """column -> per-seed metrics dicts; the zero-shot column is, per seed, the mean over the held-out domains."""
    try:
        out = {d: [r["protocols"][protocol]["metrics"] for r in runs[model][d]] for d in runs[model]}
    except KeyError:
        raise MetadepthError(f"{model}: a metrics file lacks protocol {protocol!r}; re-run the evaluate stage "
                             "(`metadepth stage evaluate`)") from None
    if ZERO_SHOT in columns:
        n = len(out[held_out[0]])
        out[ZERO_SHOT] = [{k: statistics.fmean(out[d][i][k] for d in held_out) for k in out[held_out[0]][i]}
                          for i in range(n)]
    return out


def build_table(params: Params, runs: Runs) -> Table:
    base = params.report.baseline
    domains = list(params.domains)
    held_out = [d for d in domains if d != params.train_domain]
    columns = domains + ([ZERO_SHOT] if held_out else [])
    order = [m for m in runs if m not in SANITY] + [m for m in runs if m in SANITY]
    tables = {}
    for name in protocol_names(runs, base):
        per_model = {m: _seed_metrics(runs, m, name, columns, held_out) for m in order}
        base_cells = {c: _cell(per_model[base][c], None) for c in columns}
        rows = [Row(m, label(m), m in SANITY,
                    {c: base_cells[c] if m == base else _cell(per_model[m][c], base_cells[c]) for c in columns})
                for m in order]
        protocol, differing = merged_protocol(runs, base, name)
        n_images = {d: runs[base][d][0]["n_images"] for d in domains}
        tables[name] = ProtocolTable(name, protocol, differing, n_images, rows)
    return Table(params.train_domain, base, domains, held_out, list(params.seeds), tables)
