"""Running a training stage under torchrun: the parent that launches the workers and the workers' entry point.

The dispatcher (tasks/dispatch.py) calls `launch` in a plain process when runtime.numerics.nproc_per_node > 1; it starts

    python -m torch.distributed.run --standalone --nproc-per-node N -m tasks.launch <stage> <arg> <root>

and waits. Each worker (`main` below) joins the process group and calls the same stage function as a plain process
would; the stage only sees torch.distributed initialised. Afterwards the parent logs the curve rank 0 wrote into its
tracker, so MLflow shows the same per-step losses as a single-process run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tasks.io import MetadepthError
from tasks.layout import Layout
from tasks.params import Params, load_params
from tasks.runtime import Runtime, cpu_threads_per_worker
from tasks.stages import STAGES, Stage
from tasks.training import TrainingResult

ERROR_MARK = "METADEPTH_ERROR: "  # a worker's MetadepthError, re-raised by the parent as its own one-line error
LAUNCHER_ENV = "METADEPTH_LAUNCHER_PID"  # the process that started torchrun; workers stop when it is gone


def log_curve(tracker: Any, curve: Path, names: dict[str, str]) -> None:
    """Log the per-step curve rank 0 wrote (columns renamed by `names`) into the parent's tracker."""
    if not curve.is_file():
        return
    with open(curve, newline="") as f:
        for row in csv.DictReader(f):
            metrics = {names[k]: float(v) for k, v in row.items() if k in names and v not in ("", None)}
            if metrics:
                tracker.log_metrics(metrics, int(float(row["step"])))


def _check_devices(params: Params) -> None:
    n = params.runtime.numerics.nproc_per_node
    if not dist.is_available():
        raise MetadepthError(f"runtime.numerics.nproc_per_node {n}: this torch build has no torch.distributed; "
                             "set it to 1")
    device = params.runtime.host.device
    wants_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if wants_cuda and n > torch.cuda.device_count():
        raise MetadepthError(f"runtime.numerics.nproc_per_node {n} exceeds the {torch.cuda.device_count()} "
                             "visible GPUs; lower it (one process per GPU)")


def launch(params: Params, root: Path, stage: Stage, names: list[str], seed: int, tracker: Any) -> TrainingResult:
    """Run `stage names...` under torchrun with runtime.numerics.nproc_per_node processes; returns rank 0's result.

    The workers get these exact params (as a file), not root/params.yaml, so a caller's in-memory params win.
    Their output is printed line by line as it comes (Prefect's log_prints and DVC logs see it).
    """
    if not stage.trains:
        raise MetadepthError(f"stage {stage.kind!r} cannot run under torchrun; only training stages can")
    _check_devices(params)
    n = params.runtime.numerics.nproc_per_node
    code_root = str(Path(__file__).resolve().parents[1])  # the checkout holding tasks/, models/
    env = {**os.environ, "PYTHONUNBUFFERED": "1", LAUNCHER_ENV: str(os.getpid()),
           "PYTHONPATH": os.pathsep.join(p for p in (code_root, os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": str(params.runtime.host.num_threads or cpu_threads_per_worker(n))}
    with tempfile.TemporaryDirectory(prefix="metadepth-torchrun-") as tmp:
        params_file, result_file = Path(tmp) / "params.json", Path(tmp) / "result.json"
        params_file.write_text(json.dumps(params.model_dump(mode="json")))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
               "-m", "tasks.launch", stage.kind, str(Path(root).resolve()), *names, "--seed", str(seed),
               "--params", str(params_file), "--result", str(result_file)]
        what = " ".join([stage.kind, *names])
        print(f"{what}: launching {n} processes with torchrun", flush=True)
        errors: list[str] = []
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                print(line, end="", flush=True)
                if ERROR_MARK in line:
                    errors.append(line.split(ERROR_MARK, 1)[1].strip())
            code = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: torchrun forwards the signal to its workers
                proc.terminate()
                proc.wait()
        if code != 0:
            raise MetadepthError(errors[0] if errors else f"{what}: torchrun with {n} processes failed "
                                 f"(exit code {code}); see the worker output above, or set "
                                 "runtime.numerics.nproc_per_node 1")
        if not result_file.is_file():
            raise MetadepthError(f"{what}: torchrun ended without rank 0's result; see the output above")
        result = TrainingResult(**json.loads(result_file.read_text()))
    if stage.output:
        log_curve(tracker, Layout(root, seed).curve(stage.output.format(*names)), stage.metric_names)
    return result


# ---------------------------------------------------------------------------------------------------------------
# The worker side


def init_worker(params: Params) -> None:
    """Join the process group torchrun set up; pin this worker to its GPU or to its share of the CPU cores."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = Runtime.from_params(params.runtime).device  # also applies runtime.host.num_threads
    backend = params.runtime.host.dist_backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise MetadepthError("runtime.host.dist_backend: nccl needs GPUs; use auto or gloo on CPU")
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, device_id=torch.device("cuda", local_rank))
    else:
        if not params.runtime.host.num_threads:
            torch.set_num_threads(cpu_threads_per_worker(int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        dist.init_process_group(backend)


def stop_with_launcher(pid: int, every_s: float = 1.0) -> None:
    """Exit this worker soon after the launching process dies.

    A launcher killed with SIGKILL cannot pass the signal on, and the workers would finish (and write) a stage
    nobody waits for, racing the re-run that follows. Whatever they leave is safe to resume from: every file is
    written atomically.
    """

    def watch() -> None:
        while True:
            time.sleep(every_s)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                print(f"rank {dist.get_rank() if dist.is_initialized() else 0}: the launcher (pid {pid}) is gone; "
                      "stopping", flush=True)
                os._exit(1)
            except PermissionError:  # exists, owned by someone else: not ours to judge
                pass

    threading.Thread(target=watch, name="stop-with-launcher", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Worker entry point (`torchrun ... -m tasks.launch STAGE ROOT [NAME...]`)."""
    trainers = [kind for kind, stage in STAGES.items() if stage.trains]
    parser = argparse.ArgumentParser(prog="python -m tasks.launch", description="one torchrun worker")
    parser.add_argument("stage", choices=trainers)
    parser.add_argument("root", type=Path, help="project root")
    parser.add_argument("names", nargs="*", help="the stage's arguments before the seed (meta variant, start)")
    parser.add_argument("--seed", type=int, help="training seed (default the first of params seeds)")
    parser.add_argument("--params", type=Path, help="params file (default ROOT/params.yaml)")
    parser.add_argument("--result", type=Path, help="where rank 0 writes the stage's result as JSON")
    args = parser.parse_args(argv)
    # DDP warns once per rank when a gradient's strides differ from its bucket's; for weights with a size-1
    # dimension (depthwise convolutions) both layouts are the same memory, so the warning is noise here.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    if os.environ.get(LAUNCHER_ENV):
        stop_with_launcher(int(os.environ[LAUNCHER_ENV]))
    try:
        params = load_params(args.params or args.root / "params.yaml")
        init_worker(params)
        try:
            result = STAGES[args.stage].function()(params, args.root, *args.names, seed=args.seed)
            if dist.get_rank() == 0 and args.result:
                args.result.write_text(json.dumps(result.__dict__))
        finally:
            dist.destroy_process_group()
    except MetadepthError as err:
        print(f"{ERROR_MARK}{err}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
