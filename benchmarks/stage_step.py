"""Seconds per step of the real finetune stage (data, augmentation, loss, clip, Adam, validation, checkpoints).

`benchmarks.regime cost` times the bare network step; this times what the pipeline pays per step, for the project's
params.yaml with any overrides, so two model shapes can be compared on one machine:

    python -m benchmarks.stage_step PROJECT [--steps 150] [-S key=value ...]

PROJECT is a project whose prepare stage has run (a command-one clone, say); its params.yaml is copied, never
written. The run writes PROJECT's seed-0 scratch and ft_scratch checkpoints (init with the overrides first, so the
shapes match): use a scratch clone. One torch thread, as the pipeline trains side by side on a CPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("project", type=Path)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("-S", dest="overrides", action="append", default=[])
    a = ap.parse_args()

    from tasks.finetune import run_finetune
    from tasks.initialize import run_init
    from tasks.param_values import apply_overrides

    torch.set_num_threads(1)
    params_file = Path(tempfile.mkdtemp()) / "params.yaml"
    shutil.copy(a.project / "params.yaml", params_file)
    overrides = [f"finetune.steps={a.steps}", "runtime.host.num_threads=1", *a.overrides]
    params = apply_overrides(params_file, overrides)
    run_init(params, a.project, "scratch", 0)  # also imports timm, so the timing below holds no import
    t = time.perf_counter()
    run_finetune(params, a.project, "scratch", 0)
    seconds = time.perf_counter() - t
    print(json.dumps({"overrides": a.overrides, "steps": a.steps, "seconds_per_step": round(seconds / a.steps, 4)}))


if __name__ == "__main__":
    main()
