"""The report stage: one table model (table.py) from the metrics files, the claims' verdicts (claims.py), figures,
and every output rendered from them (render.py). It reads the metrics files, the curve CSVs and the first seed's
checkpoints (for the qualitative grid), so it can be rebuilt at any time without re-running anything else.

Outputs under reports/: metrics.json (the DVC metrics file: headline numbers, contracts.md), metrics_detail.json
(every number), summary.md, index.html (self-contained: figures as data URIs), curves.csv (every curve, long format,
for `dvc plots`) and figures/*.png.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tasks.io import atomic_write
from tasks.layout import Layout
from tasks.params import Params
from tasks.report import figures as fig
from tasks.report import render
from tasks.report.claims import evaluate_claims
from tasks.report.curves import load_curves
from tasks.report.table import build_table, load_metrics


def run_report(params: Params, root: Path) -> dict[str, Any]:
    """Write every report output; returns their paths, the Markdown tables (per protocol), the table's numeric rows
    and the image-free Markdown for a Prefect artifact."""
    table = build_table(params, load_metrics(params, root))
    claims = evaluate_claims(table, params.report.claims)
    curves = load_curves(params, root)
    pngs = {f"rmse_bars_{name}": fig.rmse_bars_png(table, name) for name in table.protocols}
    pngs["qualitative"] = fig.qualitative_png(params, root, fig.qualitative_models(table))
    if (curve_png := fig.curves_png(curves, params)) is not None:
        pngs["loss_curves"] = curve_png
    ctx = render.context(params, table, claims)
    reports = Layout(root).reports
    files = {**{f"figures/{name}.png": png for name, png in pngs.items()},
             "summary.md": render.markdown(ctx, list(pngs)), "index.html": render.html(ctx, pngs),
             "metrics.json": json.dumps(render.headline_metrics(table, claims), indent=2),
             "metrics_detail.json": json.dumps(render.detail_metrics(table, claims), indent=2),
             "curves.csv": curves.to_csv(index=False)}
    for name, content in files.items():
        with atomic_write(reports / name) as tmp:
            if isinstance(content, bytes):
                tmp.write_bytes(content)
            else:
                tmp.write_text(content, encoding="utf-8")
    rel = lambda name: str((reports / name).relative_to(root))  # noqa: E731
    return {"summary": rel("summary.md"), "html": rel("index.html"), "metrics": rel("metrics.json"),
            "table": render.markdown_tables(ctx), "table_rows": render.table_rows(table),
            "markdown": render.markdown(ctx, [])}
