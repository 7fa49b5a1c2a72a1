"""A process that holds the `metadepth-train` slot and sleeps, for tests/test_signals.py to kill.

`python tests/slot_holder.py stage ROOT`: like a training stage of `metadepth stage`: a flow whose task (in a worker
thread) opens an MLflow run, takes the slot and sleeps, while the flow's main thread waits under stop_on_signals.
`python tests/slot_holder.py slot ROOT`: only the slot, no flow and no stop handling (to be killed with SIGKILL).
Prints `HOLDING <flow run id or -> <MLflow run id or -> <pid>` once it holds the slot.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from prefect import flow, task
from prefect.runtime import flow_run

from flows.orchestration import training_slot
from flows.stopping import stop_on_signals
from tasks import tracking


@task
def hold(root: str, flow_run_id: str) -> None:
    run = tracking.Run(Path(root), "finetune@signal-0", tags={"kind": "stage"}, identity={"model": "ft_signal"})
    with training_slot():
        print(f"HOLDING {flow_run_id} {run.id} {os.getpid()}", flush=True)
        time.sleep(300)
    run.end()


@flow(name="stage-signal-test")
def stage(root: str) -> None:
    with stop_on_signals():
        hold.submit(root, flow_run.id).result()


if __name__ == "__main__":
    mode, root = sys.argv[1], sys.argv[2]
    if mode == "stage":
        stage(root)
    else:
        with training_slot():
            print(f"HOLDING - - {os.getpid()}", flush=True)
            time.sleep(300)
