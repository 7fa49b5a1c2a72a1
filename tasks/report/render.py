"""Everything the report writes, rendered from the one table model and the claims: Markdown, HTML (Jinja2
templates in templates/), the headline metrics file, the detail file and the numeric rows of the table artifact."""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import jinja2

from tasks.params import Params
from tasks.report.claims import Claim
from tasks.report.stats import Interval
from tasks.report.table import HEADLINE, ZERO_SHOT, Table, label

TEMPLATES = Path(__file__).parent / "templates"
ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["html"]),
                         undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                         keep_trailing_newline=True)


def _r(value: float | None, digits: int = 5) -> float | None:
    return None if value is None else round(value, digits)


def pct(iv: Interval | None, interval: bool = False) -> str:
    """A relative change as text: `+1.2%`, or with its interval `+1.2 % [-0.4, +2.8] % (n=3)`."""
    if iv is None:
        return ""
    return iv.text("{:+.1f}", " %") if interval else f"{iv.mean:+.1f}%"


def tone(change: float) -> str:
    """CSS class of a relative change: below -0.05 % is better, above +0.05 % worse, else it shows as 0.0."""
    return "good" if change < -0.05 else "bad" if change > 0.05 else ""


def tint(change: Interval | None) -> str:
    """A background proportional to the relative RMSE change: green better, red worse, full at 30 %."""
    if change is None or not math.isfinite(change.mean):
        return ""
    alpha = min(abs(change.mean) / 30.0, 1.0) * 0.35
    rgb = "19,115,51" if change.mean < 0 else "179,38,30"
    return f"background:rgba({rgb},{alpha:.2f})"


def protocol_value(value: Any) -> str:
    """One protocol value as text: `eigen`, or `nyuv2: eigen, hypersim: none` when datasets differ."""
    if isinstance(value, dict):
        return ", ".join(f"{d}: {v}" for d, v in value.items())
    return str(value)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def not_run(params: Params) -> list[str]:
    """Rows that are absent and why, so a missing row is never mistaken for a missing result."""
    lines = []
    if "pretrained" not in params.init.kinds:
        lines.append("pretrained-initialisation baseline: not run (set `init.pretrained_path` to a local encoder "
                     "weights file, add `pretrained` to `init.kinds` and to `finetune.starts`).")
    if not [v for v in params.meta.variants if v != "meta"]:
        lines.append("ablations: none enabled (add entries to `meta.variants`, see params.yaml).")
    return lines


def context(params: Params, table: Table, claims: list[Claim]) -> dict[str, Any]:
    """What both documents show: the table, the claims grouped by name, the run's set-up and the absent rows."""
    by_name: dict[str, list[Claim]] = {}
    for c in claims:
        by_name.setdefault(c.name, []).append(c)
    meta = params.meta.settings
    setup = (f"Encoder `{params.model.encoder}`, {params.data.height}x{params.data.width}, "
             f"data seed {params.data.seed}, "
             f"training seeds {params.seeds}, meta variants {', '.join(params.meta.variants)} "
             f"({meta.steps} outer steps, L={meta.inner_steps}), fine-tuning {params.finetune.steps} "
             "steps.")
    return {"t": table, "claims": by_name, "setup": setup, "not_run": not_run(params), "ZERO_SHOT": ZERO_SHOT,
            "label": label, "pct": pct, "tone": tone, "tint": tint, "protocol_value": protocol_value,
            "max_depth": params.evaluate.max_depth}


def markdown(ctx: dict[str, Any], figures: list[str]) -> str:
    """summary.md, showing the named figures of reports/figures/; none for a Prefect artifact, where relative image
    paths would break."""
    return ENV.get_template("summary.md").render(ctx, figures=figures)


def html(ctx: dict[str, Any], figures: dict[str, bytes]) -> str:
    """index.html, one self-contained file: inline CSS, figures as data URIs (opens as an MLflow/Prefect artifact)."""
    return ENV.get_template("report.html").render(ctx, figures={k: data_uri(v) for k, v in figures.items()})


def markdown_tables(ctx: dict[str, Any]) -> str:
    """Only the Markdown tables, one per protocol (what the CLI prints after a run)."""
    return ENV.get_template("tables.md").render(ctx)


def claim_entry(c: Claim, comparison: bool = True) -> dict[str, Any]:
    ci = None if c.change is None or c.change.low is None else [_r(c.change.low, 3), _r(c.change.high, 3)]
    entry = {"rmse_change_pct": None if c.change is None else _r(c.change.mean, 3), "ci95": ci,
             "n_seeds": 0 if c.change is None else c.change.n, "verdict": c.verdict}
    return {"comparison": c.comparison, **entry} if comparison else entry


def headline_metrics(table: Table, claims: list[Claim]) -> dict[str, Any]:
    """reports/metrics.json (contracts.md): few numbers under stable keys, for `dvc metrics diff` / `dvc exp show`:
    the claims, every model's zero-shot mean RMSE per protocol, and the baseline's own-domain accuracy (metric
    protocol). Everything else is in metrics_detail.json."""
    out: dict[str, Any] = {"n_seeds": table.n_seeds, "claims": {}, "zero_shot": {}, "in_domain": {}}
    for c in claims:
        out["claims"].setdefault(c.name, {})[c.protocol] = claim_entry(c, comparison=False)
    for name, pt in table.protocols.items():
        for row in pt.rows:
            if table.held_out:
                zero_shot = row.cells[ZERO_SHOT].metrics["rmse"].mean
                out["zero_shot"].setdefault(row.model, {})[name] = {"rmse": _r(zero_shot)}
            if row.model == table.baseline and name == next(iter(table.protocols)):
                own = row.cells[table.train_domain].metrics
                out["in_domain"][row.model] = {name: {k: _r(own[k].mean) for k in HEADLINE}}
    return out


def _claims_detail(claims: list[Claim]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in claims:
        out.setdefault(c.name, {})[c.protocol] = claim_entry(c)
    return out


def detail_metrics(table: Table, claims: list[Claim]) -> dict[str, Any]:
    """reports/metrics_detail.json: every model x column x protocol, all metrics with intervals, and the claims."""
    def cell(c: Any) -> dict[str, Any]:
        return {**{k: iv.as_dict() for k, iv in c.metrics.items()},
                "rmse_change_pct": None if c.change is None else c.change.as_dict(3),
                "rmse_per_seed": [_r(v) for v in c.rmse_seeds]}

    return {"train_domain": table.train_domain, "held_out": table.held_out, "baseline": table.baseline,
            "seeds": table.seeds, "n_seeds": table.n_seeds,
            "claims": _claims_detail(claims),
            "protocols": {name: {"description": pt.description, "protocol": pt.protocol, "differing": pt.differing,
                                 "n_images": pt.n_images,
                                 "models": {r.model: {"label": r.label, "sanity": r.sanity,
                                                      "columns": {col: cell(c) for col, c in r.cells.items()}}
                                            for r in pt.rows}}
                          for name, pt in table.protocols.items()}}


def table_rows(table: Table) -> list[dict[str, Any]]:
    """The table as numeric rows (one per protocol x model x column), for the Prefect table artifact."""
    return [{"protocol": name, "model": r.model, "label": r.label, "column": table.column_name(col),
             "rmse": _r(c.metrics["rmse"].mean), "rmse_ci95_low": _r(c.metrics["rmse"].low),
             "rmse_ci95_high": _r(c.metrics["rmse"].high), "abs_rel": _r(c.metrics["abs_rel"].mean),
             "a1": _r(c.metrics["a1"].mean), "rmse_change_pct": None if c.change is None else _r(c.change.mean, 3),
             "n_seeds": c.metrics["rmse"].n}
            for name, pt in table.protocols.items() for r in pt.rows for col, c in r.cells.items()]
