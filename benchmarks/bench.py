"""`metadepth bench`: every performance question of the project answered by one command, in one JSON file.

Sections (each measures what it compares side by side, in the same run; see each module's docstring):
  reptile        one Reptile meta step vs L plain SGD steps (target ratio <= 1.05)      benchmarks/reptile_overhead.py
  loader         shard loader vs training-step consumption vs PNG/JPEG decoding        benchmarks/loader.py
  shard_format   compression x chunk_frames: file size and random-access read speed     benchmarks/loader.py
  generation     synthetic generator and ingest frames/s, with peak memory              benchmarks/generation.py
  inference      evaluate and predict images/s                                         benchmarks/inference.py
  orchestration  fixed cost per stage, training share, cached run / repro / status  benchmarks/orchestration.py
  threads        training step at 1 torch thread vs torch's default                    benchmarks/cpu_step.py
  compile        torch.compile vs eager CPU training step, compile time               benchmarks/cpu_step.py

The JSON (reports/bench.json by default) records the machine and its load average before and after, because on a
shared machine a number is only as good as the load it was measured under.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import BenchConfig, bench_device, loadavg, shrink_for_quick
from tasks.io import MetadepthError, atomic_write

SCHEMA_VERSION = 1


def _sections() -> dict[str, Callable[[BenchConfig], dict[str, Any]]]:
    from benchmarks import cpu_step, generation, inference, loader, orchestration, reptile_overhead

    return {"reptile": reptile_overhead.bench, "loader": loader.bench_loader, "shard_format": loader.bench_shard_format,
            "generation": generation.bench, "inference": inference.bench, "orchestration": orchestration.bench,
            "threads": cpu_step.bench_threads, "compile": cpu_step.bench_compile}


# compile last: dynamo leaves global state behind that must not touch the other measurements.
SECTION_NAMES = ("reptile", "loader", "shard_format", "generation", "inference", "orchestration", "threads",
                 "compile")


def parse_only(only: str | None) -> list[str]:
    """`--only a,b` as a list of section names, in the bench's own order; unknown names are an error."""
    if not only:
        return list(SECTION_NAMES)
    wanted = [s.strip() for s in only.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SECTION_NAMES]
    if unknown or not wanted:
        raise MetadepthError(f"--only {only!r}: unknown section(s) {unknown}; choose from {', '.join(SECTION_NAMES)}")
    return [s for s in SECTION_NAMES if s in wanted]


def _machine(threads: int) -> dict[str, Any]:
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_cores_usable": cores, "torch_threads": threads,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_bench(
    root: Path,
    *,
    quick: bool = False,
    threads: int = 1,
    only: str | None = None,
    out: Path | None = None,
    timing_root: Path | None = None,
    on_section: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the selected sections and write the JSON report atomically; returns what was written.

    `threads`: torch intra-op threads for every section; 0 means runtime.host.num_threads of params.yaml (torch's
    default when that is 0 too). 1 by default: on a small shared CPU, 2-thread timings of these small convolutions
    swing by 10x from one step to the next, which no median repairs.
    A section that fails is recorded with its error and the others still run; the report is written either way, so
    one broken measurement never hides the rest.
    """
    import torch

    from tasks.params import load_params
    from tasks.tracking import git_commit

    names = parse_only(only)
    params = load_params(root / "params.yaml")
    if quick:
        params = shrink_for_quick(params)
    default_threads = torch.get_num_threads()  # before anything changes it: what runtime.host.num_threads 0 gives
    n_threads = threads or params.runtime.host.num_threads
    if n_threads:
        torch.set_num_threads(n_threads)
    out = out or root / "reports" / "bench.json"
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick, "command": "metadepth bench" + (" --quick" if quick else "")
        + f" --threads {threads}" + (f" --only {','.join(names)}" if only else ""),
        "git_commit": git_commit(root), "machine": _machine(torch.get_num_threads()), "loadavg_before": loadavg(),
        "params": {"device": str(bench_device(params)), "encoder": params.model.encoder,
                   "resolution": [params.data.height, params.data.width],
                   "finetune_batch_size": params.finetune.batch_size,
                   "meta_batch_size": params.meta.settings.batch_size,
                   "inner_steps": params.meta.settings.inner_steps, "num_workers": params.runtime.host.num_workers,
                   "compression": params.data.compression, "chunk_frames": params.data.chunk_frames},
        "sections": {},
    }
    start = time.perf_counter()
    sections = _sections()
    with tempfile.TemporaryDirectory(prefix="metadepth-bench-") as tmp:
        cfg = BenchConfig(root=root, params=params, quick=quick, threads=torch.get_num_threads(), workdir=Path(tmp),
                          timing_root=timing_root or root, default_threads=default_threads)
        for name in names:
            t0 = time.perf_counter()
            try:
                result = sections[name](cfg)
            except Exception as err:
                result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
            result["seconds"] = round(time.perf_counter() - t0, 2)
            report["sections"][name] = result
            if on_section is not None:
                on_section(name, result)
    report["loadavg_after"] = loadavg()
    report["seconds"] = round(time.perf_counter() - start, 1)
    with atomic_write(out) as tmp_out:
        tmp_out.write_text(json.dumps(report, indent=2) + "\n")
    report["path"] = str(out)
    return report


# ---------------------------------------------------------------------------------------------------------------
# The printed table: a few headline numbers per section (the JSON has everything)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def headlines(name: str, r: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, value) rows for one section's result."""
    if "error" in r:
        return [("error", r["error"].splitlines()[0][:100])]
    rows: list[tuple[str, str]] = []
    if r.get("skipped"):
        rows.append(("skipped", r["skipped"]))
    if name == "reptile":
        rows += [(f"{r['inner_steps']} plain SGD steps / 1 meta step (ms)",
                  f"{r['plain_sgd_ms']} / {r['meta_step_ms']}"),
                 ("ratio meta / plain (target <= 1.05)", _fmt(r["ratio_meta_over_sgd"]))]
    elif name == "loader":
        reads = r["random_read_samples_per_s"]
        rows += [(f"loader samples/s (batches_at, workers={r['num_workers']})", _fmt(r["loader_samples_per_s"])),
                 ("finetune step samples/s", _fmt(r["step_samples_per_s"])),
                 ("headroom loader / step (>> 1)", _fmt(r["headroom_loader_over_step"])),
                 ("per-sample read: shard / PNG / JPEG (samples/s)",
                  f"{_fmt(reads['shard'])} / {_fmt(reads['png'])} / {_fmt(reads['jpeg'])}")]
    elif name == "shard_format":
        for row in r["layouts"]:
            rows.append((f"{row['compression']}, chunk_frames {row['chunk_frames']}: B/frame, reads/s "
                         "(cached handles)", f"{row['bytes_per_frame']:,}, {_fmt(row['random_read_samples_per_s'])} "
                                             f"({_fmt(row['random_read_cached_handles_per_s'])})"))
    elif name == "generation":
        g = r["generator"]
        rows.append(("generator frames/s (peak RSS MB)", f"{_fmt(g['frames_per_s'])} ({_fmt(g['peak_rss_mb'])})"))
        for run in r["ingest"]["runs"]:
            rows.append((f"ingest frames/s, {run['workers']} workers (per worker; peak RSS all MB)",
                         f"{_fmt(run['frames_per_s'])} ({_fmt(run['frames_per_s_per_worker'])}; "
                         f"{_fmt(run['all_processes_peak_rss_mb'])})"))
    elif name == "inference":
        rows += [("evaluate images/s", _fmt(r["evaluate_images_per_s"])),
                 ("predict images/s", _fmt(r["predict_images_per_s"]))]
    elif name == "orchestration":
        if "stage_costs" in r:
            c = r["stage_costs"]
            rows += [(f"tiny `dvc repro`-like run: {c['stages']} stage processes, wall (s)", _fmt(c["wall_s"])),
                     ("training share (training stage runs / wall)", _fmt(c["training_share"])),
                     ("fixed cost per stage process (s, wall - MLflow run)", _fmt(c["fixed_s_per_stage"]))]
            rows += [(f"  {kind} x{k['n']}: wall / run / fixed (s)",
                      f"{_fmt(k['wall_s'])} / {_fmt(k['run_s'])} / {_fmt(k['fixed_s'])}")
                     for kind, k in c["per_kind_mean"].items()]
            rows += [("cached `metadepth run` / `dvc repro` / `dvc status` (s)",
                      f"{_fmt(r['cached_metadepth_run_s'])} / {_fmt(r['cached_dvc_repro_s'])} / "
                      f"{_fmt(r['cached_dvc_status_s'])}")]
        d = r.get("default_pipeline_share", {})
        rows.append(("default pipeline: share outside training",
                     _fmt(d["share_outside_training"]) if d.get("measured") else "not measured"))
    elif name == "threads":
        for variant, ms in r.get("step_ms", {}).items():
            rows.append((f"finetune step ms, {variant.replace('_', ' ')}", _fmt(ms)))
    elif name == "compile":
        if r.get("available"):
            rows += [("eager / compiled step (ms)", f"{r['eager_step_ms']} / {r['compiled_step_ms']}"),
                     ("speedup compiled over eager", _fmt(r["speedup_compiled_over_eager"])),
                     ("compile time, cold / warm cache (s)",
                      f"{_fmt(r['compile_s_cold_cache'])} / {_fmt(r['compile_s_warm_cache'])}")]
        elif "available" in r:
            rows.append(("torch.compile unavailable", r["error"][:100]))
    return rows


def print_table(report: dict[str, Any], console: Any = None) -> None:
    """The headline numbers as a rich table, titled with the conditions they were measured under."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    m = report["machine"]
    table = Table(title=f"metadepth bench{' --quick' if report['quick'] else ''}: {m['cpu_cores_usable']} cores, "
                        f"{m['torch_threads']} torch threads, load {report['loadavg_before']} -> "
                        f"{report['loadavg_after']}")
    table.add_column("section")
    table.add_column("measurement")
    table.add_column("value", justify="right")
    for name, r in report["sections"].items():
        for i, (what, value) in enumerate(headlines(name, r)):
            table.add_row(name if i == 0 else "", what, value)
        table.add_section()
    console.print(table)
    console.print(f"written: {report['path']} ({report['seconds']} s)")


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.bench`, the program `metadepth bench` starts: the bench sits above the flows it
    measures, so the CLI runs it as its own process instead of importing it. Errors are one line on stderr."""
    ap = argparse.ArgumentParser(prog="metadepth bench", description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path.cwd(), help="the project (its params.yaml)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes through the same code")
    ap.add_argument("--out", type=Path, help="the JSON report (default: reports/bench.json)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads; 0: runtime.host.num_threads")
    ap.add_argument("--only", help="comma-separated sections: " + ", ".join(SECTION_NAMES))
    ap.add_argument("--timing-from", type=Path, help="project whose MLflow record gives the pipeline's time split")
    args = ap.parse_args(argv)
    from rich.console import Console

    console = Console()

    def progress(name: str, result: dict[str, Any]) -> None:
        status = "error" if "error" in result else "skipped" if result.get("skipped") else "done"
        console.print(f"[dim]bench: {name} {status} in {result['seconds']} s[/dim]")

    try:
        parse_only(args.only)  # fail on a typo before minutes of measuring
        report = run_bench(args.root, quick=args.quick, threads=args.threads, only=args.only, out=args.out,
                           timing_root=args.timing_from.resolve() if args.timing_from else None,
                           on_section=progress)
    except MetadepthError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    print_table(report, console)
    failed = [name for name, r in report["sections"].items() if "error" in r]
    if failed:  # the report is written anyway; the exit code says it is incomplete
        print(f"error: section(s) {', '.join(failed)} failed; details in {report['path']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
