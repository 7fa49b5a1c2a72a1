"""`metadepth compare`: the latest pipeline runs side by side, from MLflow.

Only parameters that differ between the runs are shown (the rest is noise when comparing), then the headline
metrics the report stage copies onto every pipeline run (the claims' changes and the zero-shot mean RMSE, AbsRel and
delta1 per model and protocol).
Filtering is MLflow's own `search_runs` filter string, so the store does the work (and a tracking server answers
with only the matching runs), not a loop over every run here.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Literal

from tasks import tracking
from tasks.io import MetadepthError
from tasks.params_file import parse_override

HEADLINE_PREFIXES = ("zero_shot.", "claims.")  # keys of reports/metrics.json (docs/contracts.md) as the runs log them
Format = Literal["markdown", "csv"]


def parse_pairs(option: str, items: list[str], example: str) -> list[tuple[str, str]]:
    """`key=value` command-line pairs; anything else is a one-line error naming the option."""
    pairs = []
    for text in items:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise MetadepthError(f"{option} {text!r}: expected KEY=VALUE, e.g. {option} {example}")
        pairs.append((key.strip(), value))
    return pairs


def _quote(value: str, what: str) -> str:
    # MLflow's filter grammar has no escape character: pick the quote the value does not contain.
    for q in ("'", '"'):
        if q not in value:
            return f"{q}{value}{q}"
    raise MetadepthError(f"{what}: a value cannot contain both ' and \" (MLflow filters cannot escape quotes)")


def _identifier(key: str, what: str) -> str:
    # Backticks let keys hold dots and spaces, e.g. params.`meta.settings.inner_steps`.
    if "`" in key:
        raise MetadepthError(f"{what}: a key cannot contain a backtick")
    return f"`{key}`"


def as_logged(value: str) -> str:
    """A `--param` value as tracking.Run logged it: parsed like `-S` (YAML), then str() of the Python value.

    So `finetune.settings.online_augment=true` matches the logged "True" and `finetune.settings.lr=5e-4` the
    logged "0.0005".
    """
    _, parsed = parse_override(f"x={value}")
    return str(parsed)


def filter_string(tags: list[tuple[str, str]], params: list[tuple[str, str]]) -> str:
    clauses = [f"tags.{_identifier(k, f'--tag {k}')} = {_quote(v, f'--tag {k}')}" for k, v in tags]
    clauses += [f"params.{_identifier(k, f'--param {k}')} = {_quote(as_logged(v), f'--param {k}')}"
                for k, v in params]
    return " and ".join(clauses)


def runs_table(runs: list[Any]) -> Any:
    """One row per run: identity, status, the parameters that differ between the runs, the headline metrics."""
    import pandas as pd

    keys = sorted({k for r in runs for k in r.data.params})
    differing = [k for k in keys if len({r.data.params.get(k) for r in runs}) > 1]
    metrics = sorted({k for r in runs for k in r.data.metrics if k.startswith(HEADLINE_PREFIXES)})
    rows = [{"run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
             "start_time": pd.Timestamp(r.info.start_time, unit="ms", tz="UTC").isoformat(),
             **{k: r.data.params.get(k) for k in differing}, **{k: r.data.metrics.get(k) for k in metrics}}
            for r in runs]
    table = pd.DataFrame(rows, columns=["run_id", "run_name", "status", "start_time", *differing, *metrics])
    table.attrs.update(differing=differing, metrics=metrics)
    return table


def to_markdown(table: Any) -> str:
    """Runs as columns (a few runs, many rows read best this way), values formatted for reading."""
    import pandas as pd

    cols = [f"{name} {run_id[:8]}" for name, run_id in zip(table["run_name"], table["run_id"], strict=True)]
    lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines.append("| status | " + " | ".join(table["status"]) + " |")
    for k in table.attrs["differing"]:
        lines.append(f"| {k} | " + " | ".join("" if pd.isna(v) else str(v) for v in table[k]) + " |")
    for k in table.attrs["metrics"]:
        lines.append(f"| {k} | " + " | ".join("" if pd.isna(v) else f"{v:.4g}" for v in table[k]) + " |")
    if not table.attrs["differing"]:
        lines.append("| (parameters) | identical in all runs |" + " |" * (len(cols) - 1))
    return "\n".join(lines)


def to_csv(table: Any) -> str:
    """One row per run, full precision: for pandas, spreadsheets and scripts."""
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    return buf.getvalue()


def compare_table(root: Path, n: int, *, experiment: str | None = None, tags: list[str] | None = None,
                  params: list[str] | None = None, fmt: Format = "markdown") -> str | None:
    """The comparison as text in `fmt`, or None when no pipeline run matches."""
    where = filter_string(parse_pairs("--tag", tags or [], "runner=dvc"),
                          parse_pairs("--param", params or [], "meta.settings.inner_steps=8"))
    runs = tracking.latest_runs(root, n, experiment, where)
    if not runs:
        return None
    table = runs_table(runs)
    return to_csv(table) if fmt == "csv" else to_markdown(table)
