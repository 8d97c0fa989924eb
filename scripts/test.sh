#!/usr/bin/env bash
# Run the whole test suite (lint, type check, then pytest) on a prepared machine; prepares it first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# The container tests need a Docker engine and the task image; without them they are skipped.
if ! scripts/docker_engine.sh; then
  echo "[test] no Docker engine (see above): the container tests will be skipped" >&2
fi
.venv/bin/ruff check .
.venv/bin/mypy
set +e
.venv/bin/pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 0
fi
exit "$status"
