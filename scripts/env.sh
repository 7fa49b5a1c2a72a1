# Sourced by the README commands: install uv if needed, then the locked environment into .venv.
# Offline and quiet: nothing phones home, the Prefect ephemeral server gets a long start-up timeout.
export DO_NOT_TRACK=true PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120
if ! python3 -m uv --version >/dev/null 2>&1; then
  python3 -m pip install --quiet --user "uv==0.13.9" || python3 -m pip install --quiet "uv==0.13.9"
fi
python3 -m uv sync --frozen --quiet
