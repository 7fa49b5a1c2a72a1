#!/usr/bin/env bash
# README command two: install from uv.lock, lint, run the whole test suite (slow end-to-end tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
python3 -m uv run ruff check .
python3 -m uv run pytest -q "$@"
