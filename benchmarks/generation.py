"""How fast data gets prepared, and in how much memory: the synthetic generator and real-dataset ingestion.

Each measurement runs in a fresh process (`python -m benchmarks.generation ...`, printing one JSON line) so its
peak resident memory is its own, not that of whatever the bench ran before:
- generate: `synthetic.generate` for one domain at the params.yaml resolution and render_batch, as the prepare
  stage streams it (the frames are discarded: writing is measured by the shard_format section).
- ingest: `tasks.preprocess.ingest.ingest` on a rendered-folder fixture (RGB PNG + 16-bit depth PNG at 120x160,
  the fixture of tasks/preprocess/memcheck.py) to shards at the params.yaml resolution, for several worker counts.
  Frames/s per worker says whether adding reader processes pays on this machine.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import BenchConfig, ratio, run_child
from tasks.preprocess.memcheck import ChildrenRSS, peak_rss_mb, rss_mb

FIXTURE_SIZE = (120, 160)


def child_generate(domain: str, n: int, seed: int, height: int, width: int, batch: int) -> dict[str, Any]:
    """(In a fresh process.) Stream n frames as the prepare stage does; frames/s and this process's memory."""
    from tasks.preprocess import synthetic

    before = rss_mb()
    start = time.perf_counter()
    frames = sum(len(b["depth"]) for b in synthetic.generate(domain, n, seed, height, width, batch))
    seconds = time.perf_counter() - start
    return {"frames": frames, "seconds": round(seconds, 3), "frames_per_s": round(frames / seconds, 1),
            "rss_after_imports_mb": round(before, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}


def child_ingest(source: Path, out: Path, workers: int, height: int, width: int, compression: str,
                 chunk_frames: int) -> dict[str, Any]:
    """(In a fresh process.) Ingest the fixture with `workers` readers; frames/s and every process's peak memory."""
    from tasks.preprocess.ingest import ingest
    from tasks.readers import make_reader

    before = rss_mb()
    start = time.perf_counter()
    with ChildrenRSS() as sampler:
        summary = ingest(make_reader("hm3d", source), out, dataset="bench", source_label=str(source),
                         height=height, width=width, min_depth=0.1, max_depth=10.0, workers=workers,
                         compression=compression, chunk_frames=chunk_frames)
    seconds = time.perf_counter() - start
    frames = sum(summary["frames"].values())
    return {"workers": workers, "frames": frames, "seconds": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 1),
            "frames_per_s_per_worker": round(frames / seconds / max(workers, 1), 1),
            "main_rss_after_imports_mb": round(before, 1), "main_peak_rss_mb": round(peak_rss_mb(), 1),
            "worker_peak_rss_mb": round(sampler.child_peak, 1),
            "all_processes_peak_rss_mb": round(sampler.total_peak, 1)}


def bench(cfg: BenchConfig) -> dict[str, Any]:
    """Generator frames/s and ingest frames/s for 0, 1, 2 reader workers, each in a fresh process with its memory."""
    from tasks.preprocess.memcheck import write_fixture

    d, render_batch = cfg.params.data, cfg.params.runtime.host.render_batch
    gen = run_child("benchmarks.generation", "generate", cfg.domain, str(cfg.size(256, 16)), str(d.seed),
                    str(d.height), str(d.width), str(render_batch))
    raw = cfg.workdir / "ingest_raw"
    write_fixture(raw, cfg.size(1000, 30), *FIXTURE_SIZE)
    runs = []
    for workers in (0, 1, 2) if not cfg.quick else (0, 1):
        runs.append(run_child("benchmarks.generation", "ingest", str(raw), str(cfg.workdir / f"ingest_{workers}"),
                              str(workers), str(d.height), str(d.width), d.compression, str(d.chunk_frames)))
    inline = runs[0]["frames_per_s"]
    for r in runs:
        r["speedup_over_inline"] = round(ratio(r["frames_per_s"], inline), 2)
    return {"resolution": [d.height, d.width], "generator": {"domain": cfg.domain, "render_batch": render_batch, **gen},
            "ingest": {"fixture": f"rendered folder, RGB PNG + 16-bit depth PNG at {FIXTURE_SIZE[0]}x"
                                  f"{FIXTURE_SIZE[1]}", "runs": runs}}


def main(argv: list[str]) -> None:
    kind, *args = argv
    if kind == "generate":
        domain, n, seed, h, w, batch = args
        out = child_generate(domain, int(n), int(seed), int(h), int(w), int(batch))
    elif kind == "ingest":
        source, dest, workers, h, w, compression, chunk = args
        out = child_ingest(Path(source), Path(dest), int(workers), int(h), int(w), compression, int(chunk))
    else:
        raise SystemExit(f"unknown measurement {kind!r}: generate or ingest")
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
