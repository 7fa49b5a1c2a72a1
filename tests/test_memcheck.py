"""One peak-memory sampler for the project (tasks/preprocess/memcheck.ChildrenRSS), used by the benchmarks too."""

from __future__ import annotations

import subprocess
import sys

from tasks.preprocess import memcheck


def test_benchmarks_use_the_memcheck_sampler():
    import benchmarks.common
    import benchmarks.generation

    assert not hasattr(benchmarks.common, "ChildrenRSS")  # no second copy to drift apart
    assert benchmarks.generation.ChildrenRSS is memcheck.ChildrenRSS
    assert benchmarks.generation.peak_rss_mb is memcheck.peak_rss_mb


def test_sampler_sees_this_process_and_its_children():
    code = "import time; x = bytearray(80 * 2**20); x[::4096] = b'1' * len(x[::4096]); time.sleep(0.6)"
    with memcheck.ChildrenRSS(interval=0.01) as s:
        subprocess.run([sys.executable, "-c", code], check=True)
    assert s.child_peak >= 80  # the child's 80 MB buffer, touched so it is resident
    assert 0 < s.self_peak <= s.total_peak and s.total_peak >= s.self_peak + 80 - 1
    assert memcheck.peak_rss_mb() >= memcheck.rss_mb() > 0
