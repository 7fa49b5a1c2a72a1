#!/usr/bin/env bash
# README command one: install from uv.lock, then the whole default pipeline: the DAG of dvc.yaml as one Prefect run
# (`metadepth run`: independent trainings side by side on a CPU, the same cache keys as `dvc repro`), its outputs
# committed to DVC so `dvc status` is clean and a later `dvc repro` has nothing to do. `metadepth repro` runs the
# same DAG through `dvc repro` itself (one stage process at a time).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
python3 -m uv run metadepth run "$@"
