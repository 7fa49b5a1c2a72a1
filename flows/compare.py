"""`metadepth compare`: the latest pipeline runs side by side, from MLflow.

Only parameters that differ between the runs are shown (the rest is noise when comparing), then the headline
metrics the report stage copies onto every pipeline run (zero-shot mean RMSE, AbsRel, delta1 per model).
"""

from __future__ import annotations

from pathlib import Path

from tasks import tracking

HEADLINE_SUFFIXES = ("zero_shot_mean.rmse", "zero_shot_mean.abs_rel", "zero_shot_mean.a1",
                     "zero_shot_mean.rmse_change_pct")


def compare_table(root: Path, n: int) -> str:
    runs = tracking.latest_runs(root, n)
    if not runs:
        return "no pipeline runs recorded yet; run `metadepth run` or `metadepth repro` first"
    cols = [f"{r.info.run_name} {r.info.run_id[:8]}" for r in runs]
    keys = sorted({k for r in runs for k in r.data.params})
    differing = [k for k in keys if len({r.data.params.get(k) for r in runs}) > 1]
    metrics = sorted({k for r in runs for k in r.data.metrics if k.endswith(HEADLINE_SUFFIXES)})
    lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines.append("| status | " + " | ".join(r.info.status for r in runs) + " |")
    for k in differing:
        lines.append(f"| {k} | " + " | ".join(str(r.data.params.get(k, "")) for r in runs) + " |")
    for k in metrics:
        vals = [r.data.metrics.get(k) for r in runs]
        lines.append(f"| {k} | " + " | ".join("" if v is None else f"{v:.4g}" for v in vals) + " |")
    if not differing:
        lines.append("| (parameters) | identical in all runs |" + " |" * (len(cols) - 1))
    return "\n".join(lines)
