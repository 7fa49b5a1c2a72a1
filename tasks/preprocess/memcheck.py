"""Measure ingestion's peak memory for growing datasets: streaming means the peak must not grow with the frame count.

    python -m tasks.preprocess.memcheck                 # 200 vs 2000 frames, 2 workers
    python -m tasks.preprocess.memcheck --frames 100 1000 --workers 0

Fixture: small synthetic frames (tasks/preprocess/synthetic/, 120x160) written as a rendered-folder dataset
(RGB PNG + 16-bit depth PNG, 10 scenes), ingested at the params.yaml default resolution in a fresh process per size.
Reported: the ingesting process's resident memory after imports (torch is most of it) and its peak, the largest
worker's peak, and the peak of all processes together (sampled with psutil by `ChildrenRSS`, which
`metadepth bench` and the evaluation fan-out test use too).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np

UNIQUE_FRAMES = 200  # rendered once, then cycled: content does not change memory behaviour


def _proc_status_mb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def rss_mb() -> float:
    """Resident memory of this process now, in MB (Linux /proc; NaN elsewhere)."""
    return _proc_status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM), NaN where /proc is missing.

    Not ru_maxrss: Linux carries the parent's peak over fork + exec into it, so a child started by a big parent
    (torch and models loaded) would report the parent's peak instead of its own.
    """
    return _proc_status_mb("VmHWM")


def write_fixture(root: Path, frames: int, height: int = 120, width: int = 160) -> None:
    from tasks.preprocess import synthetic

    batch = synthetic.render_batch("apartment", np.arange(min(frames, UNIQUE_FRAMES)), 0, height, width)
    for i in range(frames):
        j = i % len(batch["depth"])
        scene = root / f"scene{i % 10:02d}"
        (scene / "rgb").mkdir(parents=True, exist_ok=True)
        (scene / "depth").mkdir(exist_ok=True)
        cv2.imwrite(str(scene / "rgb" / f"{i:06d}.png"), cv2.cvtColor(batch["rgb"][j], cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(scene / "depth" / f"{i:06d}.png"), np.round(batch["depth"][j] * 1000).astype(np.uint16))


class ChildrenRSS(threading.Thread):
    """Peak resident size of this process, of its largest child process and of all of them together, sampled
    every `interval` seconds while it runs (use it as a context manager around the work to measure).

    The one sampler of the project (ingest memcheck, `metadepth bench`, the evaluation fan-out test). Sampling
    rather than VmHWM/ru_maxrss: ru_maxrss of children is useless here (a child started by fork + exec inherits its
    parent's peak), and a process's VmHWM covers its whole life, while this covers only the measured interval.
    """

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.self_peak = self.child_peak = self.total_peak = 0.0
        self._done = threading.Event()

    def sample(self) -> None:
        import psutil

        me = psutil.Process()
        sizes = []
        for p in me.children(recursive=True):
            try:
                sizes.append(p.memory_info().rss / 2**20)
            except psutil.Error:  # the child ended between listing and reading
                pass
        mine = me.memory_info().rss / 2**20
        self.self_peak = max(self.self_peak, mine)
        self.child_peak = max([self.child_peak, *sizes])
        self.total_peak = max(self.total_peak, mine + sum(sizes))

    def run(self) -> None:
        self.sample()
        while not self._done.wait(self.interval):
            self.sample()

    def __enter__(self) -> ChildrenRSS:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self.join()
        self.sample()  # the state at the end counts too, however short the interval was


def child(source: Path, out: Path, workers: int) -> None:
    from tasks.preprocess.ingest import ingest
    from tasks.readers import make_reader

    before = rss_mb()
    with ChildrenRSS() as sampler:
        summary = ingest(make_reader("hm3d", source), out, dataset="memcheck", source_label=str(source), height=64,
                         width=96, min_depth=0.1, max_depth=10.0, workers=workers)
    print(json.dumps({"frames": sum(summary["frames"].values()), "main_rss_after_imports_mb": round(before, 1),
                      "main_peak_rss_mb": round(peak_rss_mb(), 1), "worker_peak_rss_mb": round(sampler.child_peak, 1),
                      "all_processes_peak_rss_mb": round(sampler.total_peak, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", nargs=3, metavar=("SOURCE", "OUT", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), int(args.child[2]))
        return
    for n in args.frames:
        with tempfile.TemporaryDirectory() as tmp:
            write_fixture(Path(tmp) / "raw", n)
            proc = subprocess.run([sys.executable, "-m", "tasks.preprocess.memcheck", "--child", f"{tmp}/raw",
                                   f"{tmp}/out", str(args.workers)], capture_output=True, text=True, check=True)
            print(proc.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
