#!/usr/bin/env bash
# README command one: install from uv.lock, then the whole default pipeline through `dvc repro`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
python3 -m uv run metadepth repro "$@"
