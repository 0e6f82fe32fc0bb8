#!/bin/sh
# Container entry point for every image (CPU, GPU, Jetson).
#   serve  (default) apply the Alembic migrations, then run the API in the foreground (PID 1 via exec)
#   ingest           run the camera workers alone (cameras YAML at INSPECT_CAMERAS_FILE), with
#                    /healthz, /readyz and /metrics on HOST:PORT for the orchestrator and Prometheus
#   migrate          apply the migrations and exit (for a Kubernetes Job or a one-off run)
#   anything else    exec'd as given (e.g. `defect-inspect bench ...` or `sh`)
# INSPECT_MIGRATE_ON_START=false skips the migration step of `serve` (Kubernetes runs a Job instead).
set -eu

cmd="${1:-serve}"
[ "$#" -gt 0 ] && shift

case "$cmd" in
  serve)
    if [ "${INSPECT_MIGRATE_ON_START:-true}" = "true" ]; then
      defect-inspect db upgrade
    fi
    exec defect-inspect serve --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" "$@"
    ;;
  ingest)
    exec defect-inspect ingest --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" "$@"
    ;;
  migrate)
    exec defect-inspect db upgrade "$@"
    ;;
  *)
    exec "$cmd" "$@"
    ;;
esac
